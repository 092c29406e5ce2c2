import { access, mkdir, rm, writeFile, chown, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../../shared/logger.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { renderUnit, UNIT_NAME } from './systemd-unit.ts';
import { renderDefaultConfig } from '../../shared/config-file.ts';
import { makeSwarmKey, readSwarmKey } from '../swarm-key.ts';
import { NavigatorError } from '../../shared/errors.ts';

// `navigator depot install|uninstall`: the systemd unit, the dedicated user, the config and
// image folders, the swarm key. Everything is written under `root` (default /) so a test can
// install into a temporary root; systemctl is only called when root is /.

export interface InstallOptions {
  root: string;
  user: string;
  /** Config file path as seen on the target system. */
  configPath: string;
  dataDir: string;
  /** Copy this swarm key instead of generating one. */
  swarmKeyFrom?: string;
  /** Enable and start the unit (only when root is /). */
  start: boolean;
  logger: Logger;
}

const REPO = REPO_ROOT;

function under(root: string, path: string): string {
  return root === '/' ? path : join(root, path);
}

async function systemdVersion(): Promise<number> {
  try {
    const { stdout } = await execa('systemctl', ['--version']);
    return Number(/systemd (\d+)/.exec(stdout)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function ids(root: string, user: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await readFile(under(root, '/etc/passwd'), 'utf8').catch(() => '');
  const line = passwd.split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export interface InstallResult {
  unitPath: string;
  configPath: string;
  swarmKeyPath: string;
  created: string[];
}

export async function installDepot(o: InstallOptions): Promise<InstallResult> {
  const created: string[] = [];
  const log = o.logger.child({ component: 'install' });

  if (!(await ids(o.root, o.user))) {
    const args = ['--system', '--user-group', '--home-dir', o.dataDir, '--no-create-home', '--shell', '/usr/sbin/nologin'];
    if (o.root !== '/') args.push('--prefix', o.root);
    await execa('useradd', [...args, o.user]);
    created.push(`user ${o.user}`);
    log.info({ event: 'user-created', user: o.user }, 'created system user');
  }
  const owner = await ids(o.root, o.user);
  if (!owner) throw new NavigatorError('INTERNAL', `user ${o.user} was not created in ${o.root}/etc/passwd`);

  const configDir = dirname(o.configPath);
  for (const dir of [configDir, o.dataDir, join(o.dataDir, 'images')]) {
    await mkdir(under(o.root, dir), { recursive: true, mode: 0o750 });
  }
  for (const dir of [o.dataDir, join(o.dataDir, 'images')]) {
    await chown(under(o.root, dir), owner.uid, owner.gid);
  }

  const swarmKeyPath = join(configDir, 'swarm.key');
  const swarmTarget = under(o.root, swarmKeyPath);
  if (o.swarmKeyFrom) {
    await writeFile(swarmTarget, await readSwarmKey(o.swarmKeyFrom), { mode: 0o640 });
    created.push(swarmKeyPath);
  } else if (!existsSync(swarmTarget)) {
    await writeFile(swarmTarget, makeSwarmKey(), { mode: 0o640 });
    created.push(swarmKeyPath);
    log.warn({ event: 'swarm-key-created', path: swarmKeyPath }, 'made a new swarm key: copy it to every other depot');
  }
  await chown(swarmTarget, 0, owner.gid);

  const configTarget = under(o.root, o.configPath);
  if (!existsSync(configTarget)) {
    const text = renderDefaultConfig({
      node: { dataDir: o.dataDir },
      network: { swarmKeyFile: swarmKeyPath },
    });
    await writeFile(configTarget, text, { mode: 0o640 });
    await chown(configTarget, 0, owner.gid);
    created.push(o.configPath);
  }

  // The unit runs the bundled build (bin/build.mjs); under ProtectSystem=strict the depot cannot
  // write one itself, so it is made now, as the installing user.
  const build = await execa(process.execPath, [join(REPO, 'bin', 'build.mjs')], { reject: false });
  if (build.exitCode === 0) log.info({ event: 'build-ready', detail: String(build.stdout).trim() }, 'bundled build ready');
  else log.warn({ event: 'build-failed', err: String(build.stderr).trim().slice(0, 500) }, 'no bundled build: the depot will compile its TypeScript at start (more memory)');

  const unitPath = `/etc/systemd/system/${UNIT_NAME}`;
  await mkdir(under(o.root, dirname(unitPath)), { recursive: true });
  await writeFile(
    under(o.root, unitPath),
    renderUnit({
      nodeBinary: join(REPO, 'node_modules', '.bin', 'node'),
      entry: join(REPO, 'bin', 'navigator.mjs'),
      configPath: o.configPath,
      user: o.user,
      dataDir: o.dataDir,
      systemdVersion: await systemdVersion(),
    }),
    { mode: 0o644 },
  );
  created.push(unitPath);

  if (o.root === '/' && o.start) {
    await execa('systemctl', ['daemon-reload']);
    await execa('systemctl', ['enable', '--now', UNIT_NAME]);
    log.info({ event: 'unit-started', unit: UNIT_NAME }, 'enabled and started');
  }
  return { unitPath, configPath: o.configPath, swarmKeyPath, created };
}

export interface UninstallOptions {
  root: string;
  user: string;
  configPath: string;
  dataDir: string;
  /** Also remove the image store and all state. */
  purge: boolean;
  logger: Logger;
}

export async function uninstallDepot(o: UninstallOptions): Promise<string[]> {
  const removed: string[] = [];
  const unitPath = `/etc/systemd/system/${UNIT_NAME}`;
  if (o.root === '/') {
    await execa('systemctl', ['disable', '--now', UNIT_NAME], { reject: false });
  }
  if (await access(under(o.root, unitPath)).then(() => true, () => false)) {
    await rm(under(o.root, unitPath));
    removed.push(unitPath);
  }
  if (o.root === '/') await execa('systemctl', ['daemon-reload'], { reject: false });
  const configDir = dirname(o.configPath);
  await rm(under(o.root, configDir), { recursive: true, force: true });
  removed.push(configDir);
  if (o.purge) {
    await rm(under(o.root, o.dataDir), { recursive: true, force: true });
    removed.push(o.dataDir);
    if (await ids(o.root, o.user)) {
      const args = o.root === '/' ? [o.user] : ['--prefix', o.root, o.user];
      await execa('userdel', args);
      removed.push(`user ${o.user}`);
    }
  }
  o.logger.info({ event: 'uninstalled', removed, keptImages: !o.purge }, 'depot uninstalled');
  return removed;
}
