import { access, chmod, chown, lstat, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../../shared/logger.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { renderDefaultConfig } from '../../shared/config-file.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { makeSwarmKey, readSwarmKey } from '../swarm-key.ts';
import { loadOrCreateSshKey } from '../ssh-trust/ssh-keys.ts';
import { CTR_UNIT_NAMES, renderContainerUnit, renderUnit, UNIT_NAME } from './systemd-unit.ts';
import { configOverrides, directories, sshKeyPath, swarmKeyPath, users, writablePaths, type InstallLayout, type Owner } from './layout.ts';
import { POLKIT_RULE_PATH, SSHD_DROPIN_PATH, renderPolkitRule, renderSshdDropIn } from './system-files.ts';

// `navigator depot install`: puts a depot on this machine as layout.ts describes it — system
// users, folders with their owners and modes, the swarm key (copied, or made when none exists),
// the depot's SFTP key pair, the commented config. Run again, it repairs owners and modes and
// keeps what exists. The Debian package's postinst runs it with `packaged` (the unit, sshd
// drop-in and polkit rule are then the package's files, and the package starts the unit); from a
// git checkout it also writes those three files, builds the bundle the unit runs, reloads sshd
// and enables and starts the unit. Everything is written under `root` (default /) so a test can
// install into a temporary root; systemctl is only called when root is /.

export interface InstallOptions {
  root: string;
  layout: InstallLayout;
  /** Copy this swarm key instead of keeping or generating one. */
  swarmKeyFrom?: string;
  /** Run by the package's postinst: no unit/drop-in/polkit files, no build, no systemctl. */
  packaged?: boolean;
  /** Enable and start the unit (checkout installs, only when root is /). */
  start: boolean;
  logger: Logger;
}

export interface InstallResult {
  unitPath: string | undefined;
  configPath: string;
  swarmKeyPath: string;
  created: string[];
}

export function under(root: string, path: string): string {
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

/** uid and gid of `user` in the root's /etc/passwd. */
export async function idsOf(root: string, user: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await readFile(under(root, '/etc/passwd'), 'utf8').catch(() => '');
  const line = passwd.split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

const exists = (p: string) => access(p).then(() => true, () => false);

export async function installDepot(o: InstallOptions): Promise<InstallResult> {
  const created: string[] = [];
  const { layout: l, root } = o;
  const log = o.logger.child({ component: 'install' });

  for (const u of users(l)) {
    if (await idsOf(root, u.name)) continue;
    const args = ['--system', '--user-group', '--home-dir', u.home, '--no-create-home', '--shell', '/usr/sbin/nologin', '--comment', u.comment];
    if (u.password) args.push('--password', u.password);
    if (root !== '/') args.push('--prefix', root);
    await execa('useradd', [...args, u.name]);
    created.push(`user ${u.name}`);
    log.info({ event: 'user-created', user: u.name }, 'created system user');
  }
  const ids: Record<Owner, { uid: number; gid: number }> = {
    root: { uid: 0, gid: 0 },
    depot: await must(root, l.depotUser),
    receive: await must(root, l.receiveUser),
    service: await must(root, l.serviceUser),
  };
  // The depot hands its containers' folders to the service user's group (runner.ts): it must be
  // a member to chgrp them and to read what the containers write.
  const groups = await readFile(under(root, '/etc/group'), 'utf8').catch(() => '');
  const svcGroup = groups.split('\n').find((g) => g.startsWith(`${l.serviceUser}:`));
  if (svcGroup && !(svcGroup.split(':')[3] ?? '').split(',').includes(l.depotUser)) {
    await execa('usermod', ['--append', '--groups', l.serviceUser, ...(root !== '/' ? ['--prefix', root] : []), l.depotUser]);
    log.info({ event: 'user-group-added', user: l.depotUser, group: l.serviceUser }, 'the depot user joined the service user group');
  }

  for (const d of directories(l)) {
    const path = under(root, d.path);
    if (!(await exists(path))) created.push(d.path);
    await mkdir(path, { recursive: true });
    const st = await lstat(path);
    if (!st.isDirectory()) throw new NavigatorError('CONFLICT', `${d.path} exists and is not a folder`);
    await chown(path, ids[d.owner].uid, ids[d.group].gid);
    await chmod(path, d.mode);
  }
  const readable = { uid: 0, gid: ids.depot.gid };

  const keyPath = swarmKeyPath(l);
  const keyTarget = under(root, keyPath);
  if (o.swarmKeyFrom) {
    await writeFile(keyTarget, await readSwarmKey(o.swarmKeyFrom), { mode: 0o640 });
    created.push(keyPath);
  } else if (!existsSync(keyTarget)) {
    await writeFile(keyTarget, makeSwarmKey(), { mode: 0o640 });
    created.push(keyPath);
    log.warn({ event: 'swarm-key-created', path: keyPath }, 'made a new swarm key: copy it to every other depot');
  } else {
    await readSwarmKey(keyTarget); // a damaged key is named now, not at the depot's start
  }
  await fix(keyTarget, readable, 0o640);

  const configTarget = under(root, l.configPath);
  if (!existsSync(configTarget)) {
    await writeFile(configTarget, renderDefaultConfig(configOverrides(l)), { mode: 0o640 });
    created.push(l.configPath);
  }
  await fix(configTarget, readable, 0o640);

  const sshKey = await loadOrCreateSshKey(under(root, sshKeyPath(l)), ids.depot);
  if (sshKey.created) created.push(sshKeyPath(l));
  await fix(under(root, sshKeyPath(l)), ids.depot, 0o600);

  let unitPath: string | undefined;
  if (!o.packaged) {
    unitPath = `/etc/systemd/system/${UNIT_NAME}`;
    await writeSystemFile(root, unitPath, renderUnit({
      nodeBinary: join(REPO_ROOT, 'node_modules', '.bin', 'node'),
      entry: join(REPO_ROOT, 'bin', 'navigator.mjs'),
      configPath: l.configPath,
      user: l.depotUser,
      writablePaths: writablePaths(l),
      systemdVersion: await systemdVersion(),
    }));
    for (const name of CTR_UNIT_NAMES) {
      await writeSystemFile(root, `/etc/systemd/system/${name}`, renderContainerUnit({ serviceUser: l.serviceUser, containersDir: join(l.storeDir, 'containers'), once: name.includes('-once@') }));
      created.push(`/etc/systemd/system/${name}`);
    }
    await writeSystemFile(root, SSHD_DROPIN_PATH, renderSshdDropIn(l));
    await writeSystemFile(root, POLKIT_RULE_PATH, renderPolkitRule(l));
    created.push(unitPath, SSHD_DROPIN_PATH, POLKIT_RULE_PATH);
    // The unit runs the bundled build (bin/build.mjs); under ProtectSystem=strict the depot cannot
    // write one itself, so it is made now, as the installing user.
    const build = await execa(process.execPath, [join(REPO_ROOT, 'bin', 'build.mjs')], { reject: false });
    if (build.exitCode === 0) log.info({ event: 'build-ready', detail: String(build.stdout).trim() }, 'bundled build ready');
    else log.warn({ event: 'build-failed', err: String(build.stderr).trim().slice(0, 500) }, 'no bundled build: the depot will compile its TypeScript at start (more memory)');
    if (root === '/') {
      await execa('systemctl', ['daemon-reload']);
      // New logins of the receive account get the drop-in; running sessions are untouched.
      await execa('systemctl', ['try-reload-or-restart', 'ssh.service'], { reject: false });
      if (o.start) {
        await execa('systemctl', ['enable', '--now', UNIT_NAME]);
        log.info({ event: 'unit-started', unit: UNIT_NAME }, 'enabled and started');
      }
    }
  }
  return { unitPath, configPath: l.configPath, swarmKeyPath: keyPath, created };
}

async function must(root: string, user: string): Promise<{ uid: number; gid: number }> {
  const id = await idsOf(root, user);
  if (!id) throw new NavigatorError('INTERNAL', `user ${user} was not created in ${root}/etc/passwd`);
  return id;
}

async function fix(path: string, owner: { uid: number; gid: number }, mode: number): Promise<void> {
  await chown(path, owner.uid, owner.gid);
  await chmod(path, mode);
}

async function writeSystemFile(root: string, path: string, text: string): Promise<void> {
  await mkdir(under(root, dirname(path)), { recursive: true });
  await writeFile(under(root, path), text, { mode: 0o644 });
  await chmod(under(root, path), 0o644);
}
