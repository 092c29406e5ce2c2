import { rm } from 'node:fs/promises';
import { execa } from 'execa';
import type { Logger } from '../../shared/logger.ts';
import { CTR_UNIT_NAMES, UNIT_NAME } from './systemd-unit.ts';
import { authorizedKeysPath, purgedPaths, users, type InstallLayout } from './layout.ts';
import { POLKIT_RULE_PATH, SSHD_DROPIN_PATH } from './system-files.ts';
import { idsOf, under } from './install.ts';

// `navigator depot uninstall [--purge]`, with the Debian package's semantics (its maintainer
// scripts do the same in shell): remove stops the depot and the service containers it ran,
// removes the unit, the sshd drop-in and the polkit rule, and empties the receive account (its
// authorized_keys), keeping configuration, keys, state and images; purge also removes those and
// the system users.

export interface UninstallOptions {
  root: string;
  layout: InstallLayout;
  /** Also remove configuration, keys, state, images and the users. */
  purge: boolean;
  logger: Logger;
}

export async function uninstallDepot(o: UninstallOptions): Promise<string[]> {
  const removed: string[] = [];
  const { layout: l, root } = o;
  if (root === '/') {
    await execa('systemctl', ['disable', '--now', UNIT_NAME], { reject: false });
    await stopLeftovers(l);
  }
  for (const path of [`/etc/systemd/system/${UNIT_NAME}`, ...CTR_UNIT_NAMES.map((n) => `/etc/systemd/system/${n}`), SSHD_DROPIN_PATH, POLKIT_RULE_PATH, authorizedKeysPath(l)]) {
    if (await rm(under(root, path)).then(() => true, () => false)) removed.push(path);
  }
  if (root === '/') {
    await execa('systemctl', ['daemon-reload'], { reject: false });
    await execa('systemctl', ['try-reload-or-restart', 'ssh.service'], { reject: false });
  }
  if (o.purge) {
    for (const path of purgedPaths(l)) {
      await rm(under(root, path), { recursive: true, force: true });
      removed.push(path);
    }
    for (const u of [...users(l)].reverse()) {
      if (!(await idsOf(root, u.name))) continue;
      await execa('userdel', root === '/' ? [u.name] : ['--prefix', root, u.name]);
      removed.push(`user ${u.name}`);
    }
  }
  o.logger.info({ event: 'uninstalled', removed, purged: o.purge }, 'depot uninstalled');
  return removed;
}

/**
 * The service containers' processes outlive a depot restart (units of their own, runner.ts); once
 * the depot is removed nothing supervises them, so they are stopped too: SIGTERM, then SIGKILL
 * after 5 s. Only the package's own accounts are matched.
 */
async function stopLeftovers(l: InstallLayout): Promise<void> {
  const accounts = [l.serviceUser, l.depotUser];
  for (const u of accounts) await execa('pkill', ['-TERM', '-u', u], { reject: false });
  for (let i = 0; i < 50; i++) {
    const left = await Promise.all(accounts.map((u) => execa('pgrep', ['-u', u], { reject: false })));
    if (left.every((r) => r.exitCode !== 0)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const u of accounts) await execa('pkill', ['-KILL', '-u', u], { reject: false });
}
