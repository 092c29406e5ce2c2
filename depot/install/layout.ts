import { dirname, join } from 'node:path';

// What an installed depot looks like on a workstation — users, folders with their owners and
// modes, the files made once — as data. `navigator depot install` (git checkouts) and the Debian
// package's maintainer scripts (depot/install/debian/) both apply this, so the two install paths
// cannot drift apart.
//
//   /etc/navigator                 root:navigator 0750  config, swarm key (the depot reads, never writes)
//   /var/lib/navigator             navigator      0750  node.dataDir: identity, journal, pilots, voters
//   /var/lib/navigator/ssh         navigator      0750  SFTP key pair, authorized_keys, host key pins
//   /var/lib/navigator-store       root:root      0755  store.dir, the receive account's chroot
//     images, quarantine, spare  navigator 0750
//     containers                   navigator:navigator-svc 0750  (the depot gives each container's
//                                  folder to the group navigator-svc; the depot is a member)
//     staging                      navigator:navigator-recv 2750  (setgid: what the depot makes
//                                  there belongs to the receive account's group, which may write
//                                  the blocks the depot asked for and nothing else)
//
// sshd insists that a ChrootDirectory and every folder above it belong to root and be writable by
// no one else; the store therefore lives beside the data folder, not inside it.

export interface InstallLayout {
  /** The depot's user (and group). */
  depotUser: string;
  /** Runs the service containers' processes (depot/containers/runner.ts); the depot's user is a member of its group. */
  serviceUser: string;
  /** The SFTP receive-only account other depots log in as. */
  receiveUser: string;
  /** Config file path. */
  configPath: string;
  /** node.dataDir */
  dataDir: string;
  /** store.dir, also the receive account's chroot. */
  storeDir: string;
}

export const DEFAULT_LAYOUT: InstallLayout = {
  depotUser: 'navigator',
  serviceUser: 'navigator-svc',
  receiveUser: 'navigator-recv',
  configPath: '/etc/navigator/navigator.yaml',
  dataDir: '/var/lib/navigator',
  storeDir: '/var/lib/navigator-store',
};

export type Owner = 'root' | 'depot' | 'receive' | 'service';

export interface DirSpec {
  path: string;
  owner: Owner;
  group: Owner;
  mode: number;
}

export interface UserSpec {
  name: string;
  home: string;
  /** Password field: '*' is no password but not "locked" (sshd refuses locked accounts even with a key). */
  password?: string;
  comment: string;
}

export function configDir(l: InstallLayout): string {
  return dirname(l.configPath);
}

export function swarmKeyPath(l: InstallLayout): string {
  return join(configDir(l), 'swarm.key');
}

export function sshDir(l: InstallLayout): string {
  return join(l.dataDir, 'ssh');
}

export function sshKeyPath(l: InstallLayout): string {
  return join(sshDir(l), 'id_ed25519');
}

export function authorizedKeysPath(l: InstallLayout): string {
  return join(sshDir(l), 'authorized_keys');
}

/** System users, in creation order. */
export function users(l: InstallLayout): UserSpec[] {
  return [
    { name: l.depotUser, home: l.dataDir, comment: 'Navigator depot' },
    { name: l.serviceUser, home: '/nonexistent', comment: 'Navigator service containers' },
    { name: l.receiveUser, home: '/', password: '*', comment: 'Navigator image receive (SFTP only)' },
  ];
}

/** Folders in creation order (parents first), with the owner and mode each must have. */
export function directories(l: InstallLayout): DirSpec[] {
  const store = (name: string, group: Owner = 'depot', mode = 0o750): DirSpec => ({ path: join(l.storeDir, name), owner: 'depot', group, mode });
  return [
    { path: configDir(l), owner: 'root', group: 'depot', mode: 0o750 },
    { path: l.dataDir, owner: 'depot', group: 'depot', mode: 0o750 },
    { path: sshDir(l), owner: 'depot', group: 'depot', mode: 0o750 },
    { path: l.storeDir, owner: 'root', group: 'root', mode: 0o755 },
    store('images'),
    store('quarantine'),
    store('spare'),
    // The service user (group member of nothing else) must reach its container's folder.
    store('containers', 'service'),
    store('staging', 'receive', 0o2750),
  ];
}

/** What the installed config file sets besides the schema's defaults. */
export function configOverrides(l: InstallLayout): Record<string, Record<string, unknown>> {
  return {
    node: { dataDir: l.dataDir },
    network: { swarmKeyFile: swarmKeyPath(l) },
    store: { dir: l.storeDir },
    ship: { sshUser: l.receiveUser, receiveChroot: l.storeDir },
  };
}

/** Folders the depot writes (the unit's ReadWritePaths=). */
export function writablePaths(l: InstallLayout): string[] {
  return [l.dataDir, l.storeDir];
}

/** Everything `purge` removes besides the users (the package's own files are dpkg's). */
export function purgedPaths(l: InstallLayout): string[] {
  return [configDir(l), l.dataDir, l.storeDir];
}
