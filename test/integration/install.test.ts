import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, existsSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { installDepot } from '../../depot/install/install.ts';
import { uninstallDepot } from '../../depot/install/uninstall.ts';
import { DEFAULT_LAYOUT } from '../../depot/install/layout.ts';
import { renderSshdDropIn } from '../../depot/install/system-files.ts';
import { DEPOT_ENV, DEPOT_NODE_FLAGS } from '../../depot/runtime-flags.ts';
import { loadConfig } from '../../shared/config.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';

// Install into a temporary root: useradd --prefix writes that root's /etc/passwd, the unit is
// checked by the real systemd-analyze and the sshd drop-in by the real sshd, and uninstall keeps
// configuration, keys and images unless purged. (Installing for real — the package with dpkg, the
// unit under systemd — is test/lab/package-*.test.ts.)
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'nav-root-'));
  mkdirSync(join(root, 'etc'), { recursive: true });
  for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'login.defs']) {
    if (existsSync(`/etc/${f}`)) copyFileSync(`/etc/${f}`, join(root, 'etc', f));
  }
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const layout = { ...DEFAULT_LAYOUT, depotUser: 'navtest', serviceUser: 'navtest-svc', receiveUser: 'navtest-recv' };
const opts = () => ({ root, layout, start: false, logger: silentLogger() });

function idOf(user: string): { uid: number; gid: number } {
  const line = readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith(`${user}:`))!;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function owned(path: string): { uid: number; gid: number; mode: number } {
  const st = statSync(join(root, path));
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
}

describe('depot install', () => {
  it('creates the users, folders with their owners and modes, keys, a valid config, a unit systemd accepts and an sshd drop-in sshd accepts', async () => {
    const events: Array<{ event?: string; detail?: string }> = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void events.push(JSON.parse(line)) } });
    const res = await installDepot({ ...opts(), logger });
    // The unit runs the bundled build of these sources (made now or earlier, never missing).
    expect(events.find((e) => e.event === 'build-ready')?.detail).toMatch(/^(built|up to date:) dist\/[0-9a-f]{16}\/main\.js$/);
    const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
    expect(passwd).toMatch(/^navtest:x:\d+:\d+:Navigator depot:\/var\/lib\/navigator:\/usr\/sbin\/nologin$/m);
    expect(passwd).toMatch(/^navtest-svc:x:\d+:\d+:Navigator service containers:\/nonexistent:\/usr\/sbin\/nologin$/m);
    expect(passwd).toMatch(/^navtest-recv:x:\d+:\d+:Navigator image receive \(SFTP only\):\/:\/usr\/sbin\/nologin$/m);
    // The receive account has no password but is not locked (sshd refuses locked accounts).
    expect(readFileSync(join(root, 'etc/shadow'), 'utf8')).toMatch(/^navtest-recv:\*:/m);
    expect(readFileSync('/etc/passwd', 'utf8')).not.toMatch(/^navtest/m);

    // The service user can read its config and swarm key (the bug of issue 16: 0750 root:root).
    const depot = idOf('navtest');
    const recv = idOf('navtest-recv');
    expect(owned('etc/navigator')).toEqual({ uid: 0, gid: depot.gid, mode: 0o750 });
    expect(owned('etc/navigator/navigator.yaml')).toEqual({ uid: 0, gid: depot.gid, mode: 0o640 });
    expect(owned('etc/navigator/swarm.key')).toEqual({ uid: 0, gid: depot.gid, mode: 0o640 });
    expect(owned('var/lib/navigator')).toEqual({ ...depot, mode: 0o750 });
    expect(owned('var/lib/navigator/ssh/id_ed25519')).toEqual({ ...depot, mode: 0o600 });
    // The store is the receive chroot: root's, and nobody else may write it; staging hands its group to the receive account.
    expect(owned('var/lib/navigator-store')).toEqual({ uid: 0, gid: 0, mode: 0o755 });
    for (const d of ['images', 'quarantine', 'spare']) expect(owned(`var/lib/navigator-store/${d}`)).toEqual({ ...depot, mode: 0o750 });
    // The service user reaches its containers' folders (runner.ts); the depot is in its group, to hand them over.
    const svc = idOf('navtest-svc');
    expect(owned('var/lib/navigator-store/containers')).toEqual({ uid: depot.uid, gid: svc.gid, mode: 0o750 });
    expect(readFileSync(join(root, 'etc/group'), 'utf8')).toMatch(/^navtest-svc:x:\d+:navtest$/m);
    expect(owned('var/lib/navigator-store/staging')).toEqual({ uid: depot.uid, gid: recv.gid, mode: 0o2750 });

    const key = readFileSync(join(root, 'etc/navigator/swarm.key'), 'utf8');
    expect(key).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/);
    expect(readFileSync(join(root, 'var/lib/navigator/ssh/id_ed25519.pub'), 'utf8')).toMatch(/^ssh-ed25519 \S{68} navigator\n$/);

    const cfg = loadConfig({ path: join(root, 'etc/navigator/navigator.yaml'), env: {} });
    expect(cfg.network.swarmKeyFile).toBe('/etc/navigator/swarm.key');
    expect(cfg.node.dataDir).toBe('/var/lib/navigator');
    expect(cfg.store.dir).toBe('/var/lib/navigator-store');
    expect(cfg.ship).toMatchObject({ sshUser: 'navtest-recv', receiveChroot: '/var/lib/navigator-store', sshKeyFile: '/var/lib/navigator/ssh/id_ed25519', knownHostsFile: '' });
    expect(readFileSync(join(root, 'etc/navigator/navigator.yaml'), 'utf8')).toContain('# Each depot probes one other depot per interval');

    const unit = readFileSync(join(root, res.unitPath!), 'utf8');
    expect(unit).toContain('Restart=always');
    expect(unit).toContain('User=navtest');
    expect(unit).toContain('AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW');
    expect(unit).toContain('CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW');
    expect(unit).toContain('ReadWritePaths=/var/lib/navigator /var/lib/navigator-store\n');
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
    // The service containers' unit templates, the same way.
    for (const name of ['navigator-ctr@.service', 'navigator-ctr-once@.service']) {
      const text = readFileSync(join(root, 'etc/systemd/system', name), 'utf8');
      expect(text).toMatch(/^User=navtest-svc$/m);
      writeFileSync(join(root, 'check', name), text.replace(/^(User|Group)=navtest-svc$/gm, '$1=daemon'));
      const v = await execa('systemd-analyze', ['verify', join(root, 'check', name)], { reject: false });
      expect(v.stderr.split('\n').filter((l) => l.includes('navigator-ctr')), name).toEqual([]);
      expect(v.exitCode, name).toBe(0);
    }

    // The drop-in, included the way Debian's sshd_config includes sshd_config.d/: the receive
    // account gets SFTP only, chrooted, keys from the depot's file; every other user keeps the
    // host's settings.
    const dropIn = readFileSync(join(root, 'etc/ssh/sshd_config.d/navigator.conf'), 'utf8');
    expect(dropIn).toBe(renderSshdDropIn(layout));
    const sshdDir = join(root, 'sshd');
    mkdirSync(join(sshdDir, 'd'), { recursive: true });
    writeFileSync(join(sshdDir, 'd', 'navigator.conf'), dropIn);
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(sshdDir, 'host')]);
    writeFileSync(join(sshdDir, 'sshd_config'), `Include ${sshdDir}/d/*.conf\nHostKey ${sshdDir}/host\nX11Forwarding yes\nSubsystem sftp /usr/lib/openssh/sftp-server\n`);
    const effective = async (user: string) => {
      const { stdout } = await execa('/usr/sbin/sshd', ['-T', '-f', join(sshdDir, 'sshd_config'), '-C', `user=${user},host=h,addr=10.0.0.9`]);
      return Object.fromEntries(stdout.split('\n').map((l) => [l.split(' ')[0]!, l.slice(l.indexOf(' ') + 1)]));
    };
    const r = await effective('navtest-recv');
    expect(r).toMatchObject({
      chrootdirectory: '/var/lib/navigator-store',
      forcecommand: 'internal-sftp -p open,close,write,fstat,lstat,stat,realpath,statvfs,fstatvfs,limits,fsync',
      authorizedkeysfile: 'none',
      authorizedkeyscommand: '/usr/bin/cat /var/lib/navigator/ssh/authorized_keys',
      authorizedkeyscommanduser: 'navtest',
      passwordauthentication: 'no',
      disableforwarding: 'yes',
      permittty: 'no',
    });
    const other = await effective('root');
    expect(other).toMatchObject({ chrootdirectory: 'none', forcecommand: 'none', authorizedkeyscommand: 'none', x11forwarding: 'yes', disableforwarding: 'no', permittty: 'yes' });
  });

  it('repairs owners and modes of an earlier install, keeps an existing config and copies a given swarm key', async () => {
    mkdirSync(join(root, 'etc/navigator'), { recursive: true, mode: 0o750 });
    writeFileSync(join(root, 'etc/navigator/navigator.yaml'), 'http:\n  port: 7999\n', { mode: 0o600 });
    const keyFile = join(root, 'given.key');
    writeFileSync(keyFile, `/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}\n`);
    await installDepot({ ...opts(), swarmKeyFrom: keyFile });
    expect(readFileSync(join(root, 'etc/navigator/navigator.yaml'), 'utf8')).toBe('http:\n  port: 7999\n');
    expect(owned('etc/navigator/navigator.yaml')).toEqual({ uid: 0, gid: idOf('navtest').gid, mode: 0o640 });
    expect(owned('etc/navigator')).toEqual({ uid: 0, gid: idOf('navtest').gid, mode: 0o750 });
    expect(readFileSync(join(root, 'etc/navigator/swarm.key'), 'utf8')).toContain('ab'.repeat(32));
    // Run again: nothing new, the same keys.
    const sshPub = readFileSync(join(root, 'var/lib/navigator/ssh/id_ed25519.pub'), 'utf8');
    const again = await installDepot({ ...opts(), packaged: true });
    expect(again.created).toEqual([]);
    expect(readFileSync(join(root, 'var/lib/navigator/ssh/id_ed25519.pub'), 'utf8')).toBe(sshPub);
  });

  it('refuses a malformed swarm key and names it', async () => {
    const keyFile = join(root, 'bad.key');
    writeFileSync(keyFile, 'not a key');
    await expect(installDepot({ ...opts(), swarmKeyFrom: keyFile })).rejects.toThrow(/bad\.key is not a valid private network key/);
  });

  it('uninstall keeps configuration, keys and images but locks the receive account out; purge removes them and the users', async () => {
    await installDepot(opts());
    writeFileSync(join(root, 'var/lib/navigator-store/images/keep-me'), 'x');
    writeFileSync(join(root, 'var/lib/navigator/ssh/authorized_keys'), 'restrict ssh-ed25519 AAAA x\n');
    await uninstallDepot({ ...opts(), purge: false });
    for (const gone of ['etc/systemd/system/navigator-depot.service', 'etc/ssh/sshd_config.d/navigator.conf', 'etc/polkit-1/rules.d/50-navigator.rules', 'var/lib/navigator/ssh/authorized_keys']) {
      expect(existsSync(join(root, gone)), gone).toBe(false);
    }
    for (const kept of ['etc/navigator/navigator.yaml', 'etc/navigator/swarm.key', 'var/lib/navigator/ssh/id_ed25519', 'var/lib/navigator-store/images/keep-me']) {
      expect(existsSync(join(root, kept)), kept).toBe(true);
    }
    await uninstallDepot({ ...opts(), purge: true });
    for (const gone of ['etc/navigator', 'var/lib/navigator', 'var/lib/navigator-store']) expect(existsSync(join(root, gone)), gone).toBe(false);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).not.toMatch(/^navtest/m);
  });
});
