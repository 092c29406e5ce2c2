import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, existsSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { installDepot, uninstallDepot } from '../../depot/install/install.ts';
import { DEPOT_ENV, DEPOT_NODE_FLAGS } from '../../depot/runtime-flags.ts';
import { loadConfig } from '../../shared/config.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';

// Install into a temporary root: useradd --prefix writes that root's /etc/passwd, the unit is
// checked by the real systemd-analyze, and uninstall keeps images unless purged.
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'nav-root-'));
  mkdirSync(join(root, 'etc'), { recursive: true });
  for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'login.defs']) {
    if (existsSync(`/etc/${f}`)) copyFileSync(`/etc/${f}`, join(root, 'etc', f));
  }
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const opts = () => ({
  root,
  user: 'navtest',
  configPath: '/etc/navigator/navigator.yaml',
  dataDir: '/var/lib/navigator',
  start: false,
  logger: silentLogger(),
});

describe('depot install', () => {
  it('creates the user, folders, swarm key, a valid config and a unit systemd accepts', async () => {
    const events: Array<{ event?: string; detail?: string }> = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void events.push(JSON.parse(line)) } });
    const res = await installDepot({ ...opts(), logger });
    // The unit runs the bundled build of these sources (made now or earlier, never missing).
    expect(events.find((e) => e.event === 'build-ready')?.detail).toMatch(/^(built|up to date:) dist\/[0-9a-f]{16}\/main\.js$/);
    const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
    expect(passwd).toMatch(/^navtest:x:\d+:\d+::\/var\/lib\/navigator:\/usr\/sbin\/nologin$/m);
    expect(readFileSync('/etc/passwd', 'utf8')).not.toMatch(/^navtest:/m);

    const key = readFileSync(join(root, 'etc/navigator/swarm.key'), 'utf8');
    expect(key).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/);
    expect(statSync(join(root, 'etc/navigator/swarm.key')).mode & 0o777).toBe(0o640);
    expect(existsSync(join(root, 'var/lib/navigator/images'))).toBe(true);

    const cfg = loadConfig({ path: join(root, 'etc/navigator/navigator.yaml'), env: {} });
    expect(cfg.network.swarmKeyFile).toBe('/etc/navigator/swarm.key');
    expect(cfg.node.dataDir).toBe('/var/lib/navigator');
    expect(readFileSync(join(root, 'etc/navigator/navigator.yaml'), 'utf8')).toContain('# Each depot probes one other depot per interval');

    const unitFile = join(root, res.unitPath);
    const unit = readFileSync(unitFile, 'utf8');
    expect(unit).toContain('Restart=always');
    expect(unit).toContain('User=navtest');
    expect(unit).toContain('AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW');
    expect(unit).toContain('CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW');
    // The same Node flags as every other launcher of a depot (depot/runtime-flags.ts).
    expect(DEPOT_NODE_FLAGS.length).toBeGreaterThan(0);
    expect(unit).toContain(`/node_modules/.bin/node ${DEPOT_NODE_FLAGS.join(' ')} /`);
    for (const [k, v] of Object.entries(DEPOT_ENV)) expect(unit).toContain(`Environment=${k}=${v}\n`);
    expect(unit).toMatch(/^ExecStart=\/\S+\/node_modules\/\.bin\/node (--\S+ )+\/\S+\/bin\/navigator\.mjs depot run --config \/etc\/navigator\/navigator\.yaml$/m);

    // systemd-analyze resolves User= on the real system, where navtest does not exist: verify a copy
    // that names an existing system user instead (any unknown key or bad value is still reported).
    const check = join(root, 'check', 'navigator-depot.service');
    mkdirSync(join(root, 'check'));
    writeFileSync(check, unit.replace(/^(User|Group)=navtest$/gm, '$1=daemon'));
    const verify = await execa('systemd-analyze', ['verify', check], { reject: false });
    expect(verify.stderr.split('\n').filter((l) => l.includes('navigator-depot'))).toEqual([]);
    expect(verify.exitCode).toBe(0);
  });

  it('keeps an existing config and copies a given swarm key', async () => {
    mkdirSync(join(root, 'etc/navigator'), { recursive: true });
    writeFileSync(join(root, 'etc/navigator/navigator.yaml'), 'http:\n  port: 7999\n');
    const keyFile = join(root, 'given.key');
    writeFileSync(keyFile, `/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}\n`);
    await installDepot({ ...opts(), swarmKeyFrom: keyFile });
    expect(readFileSync(join(root, 'etc/navigator/navigator.yaml'), 'utf8')).toBe('http:\n  port: 7999\n');
    expect(readFileSync(join(root, 'etc/navigator/swarm.key'), 'utf8')).toContain('ab'.repeat(32));
  });

  it('refuses a malformed swarm key and names it', async () => {
    const keyFile = join(root, 'bad.key');
    writeFileSync(keyFile, 'not a key');
    await expect(installDepot({ ...opts(), swarmKeyFrom: keyFile })).rejects.toThrow(/bad\.key is not a valid private network key/);
  });

  it('uninstall keeps images unless purged; purge removes state and the user', async () => {
    await installDepot(opts());
    writeFileSync(join(root, 'var/lib/navigator/images/keep-me'), 'x');
    await uninstallDepot({ ...opts(), purge: false });
    expect(existsSync(join(root, 'etc/systemd/system/navigator-depot.service'))).toBe(false);
    expect(existsSync(join(root, 'etc/navigator'))).toBe(false);
    expect(existsSync(join(root, 'var/lib/navigator/images/keep-me'))).toBe(true);
    await uninstallDepot({ ...opts(), purge: true });
    expect(existsSync(join(root, 'var/lib/navigator'))).toBe(false);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).not.toMatch(/^navtest:/m);
  });
});
