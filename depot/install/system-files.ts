import { authorizedKeysPath, type InstallLayout } from './layout.ts';

// Files an install puts into other programs' configuration, as pure text: the sshd drop-in for
// the receive account and the polkit rule for the service containers' units. The package ships
// them; `navigator depot install` writes the same text.

export const SSHD_DROPIN_PATH = '/etc/ssh/sshd_config.d/navigator.conf';
/** Where `depot install` puts the polkit rule; the package uses the vendor folder (PACKAGE_POLKIT_PATH). */
export const POLKIT_RULE_PATH = '/etc/polkit-1/rules.d/50-navigator.rules';
export const PACKAGE_POLKIT_PATH = '/usr/share/polkit-1/rules.d/50-navigator.rules';

/**
 * SFTP requests the receive account may make: open an existing file, write blocks, and what the
 * sender's checks use (stat, statvfs for a clear disk-full message, limits). No listing, no
 * create (the staging folders are not writable to it), no remove, rename, link or setstat.
 */
export const SFTP_REQUESTS = ['open', 'close', 'write', 'fstat', 'lstat', 'stat', 'realpath', 'statvfs', 'fstatvfs', 'limits', 'fsync'];

/**
 * The receive account: key authentication with the keys the depot keeps for the current swarm
 * members (read through `cat` as the depot's user, so sshd's StrictModes ownership rules for
 * authorized_keys do not apply), chrooted to the image store, SFTP only with the requests above,
 * nothing forwarded, no terminal. Debian's sshd_config includes sshd_config.d/*.conf first; a
 * Match block there ends with its file, so nothing else of the host's sshd changes.
 */
export function renderSshdDropIn(l: InstallLayout): string {
  return [
    '# Navigator: the receive-only SFTP account other depots ship images through.',
    '# Installed by the navigator package (or `navigator depot install`); removed with it.',
    `Match User ${l.receiveUser}`,
    `    ChrootDirectory ${l.storeDir}`,
    `    ForceCommand internal-sftp -p ${SFTP_REQUESTS.join(',')}`,
    '    AuthorizedKeysFile none',
    `    AuthorizedKeysCommand /usr/bin/cat ${authorizedKeysPath(l)}`,
    `    AuthorizedKeysCommandUser ${l.depotUser}`,
    '    PubkeyAuthentication yes',
    '    PasswordAuthentication no',
    '    KbdInteractiveAuthentication no',
    '    DisableForwarding yes',
    '    PermitTTY no',
    '    PermitUserRC no',
    '',
  ].join('\n');
}

/**
 * Lets the depot's user manage exactly the units its service containers run in (instances of
 * navigator-ctr@.service and navigator-ctr-once@.service, depot/containers/runner.ts: start, stop,
 * kill, reset-failed, set-property) and nothing else. systemd passes the unit name to polkit for
 * these; a request without one (StartTransientUnit on systemd 252) is not granted.
 */
export function renderPolkitRule(l: InstallLayout): string {
  return [
    `// Navigator: the depot (user ${l.depotUser}) manages its service containers' units, and no other.`,
    'polkit.addRule(function (action, subject) {',
    `  if (action.id !== "org.freedesktop.systemd1.manage-units" || subject.user !== "${l.depotUser}") return polkit.Result.NOT_HANDLED;`,
    '  var unit = action.lookup("unit") || "";',
    '  if (/^navigator-ctr(-once)?@[A-Za-z0-9_.:-]+\\.service$/.test(unit)) return polkit.Result.YES;',
    '  return polkit.Result.NOT_HANDLED;',
    '});',
    '',
  ].join('\n');
}

/** /usr/bin/navigator in the package: the pinned Node 22 runs the CLI (the system's node may be older or absent). */
export function renderCliWrapper(prefix: string): string {
  return ['#!/bin/sh', '# The navigator CLI with the Node.js 22 shipped in the package.', `exec ${prefix}/bin/node ${prefix}/bin/navigator.mjs "$@"`, ''].join('\n');
}
