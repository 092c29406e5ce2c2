import { purgedPaths, authorizedKeysPath, users, type InstallLayout } from '../layout.ts';
import { UNIT_NAME } from '../systemd-unit.ts';
import { SSHD_DROPIN_PATH } from '../system-files.ts';

// The Debian package's control file and maintainer scripts, as pure text made from the install
// layout (layout.ts), so they cannot drift from `navigator depot install`/`uninstall`:
//  - postinst configure runs `navigator depot install --packaged` — the same code a checkout
//    install runs — then enables and starts the unit where systemd runs (deb-systemd-helper and
//    deb-systemd-invoke, as debhelper does, so an admin's disable and policy-rc.d are respected);
//  - prerm stops the depot on remove and on upgrade: the stop is a planned move (a primary here
//    hands its service over first), and the old process must not outlive its files — its lazily
//    loaded code goes away with the old version;
//  - prerm remove also stops the service containers' processes, which outlive a depot restart;
//  - postrm remove empties the receive account (its authorized_keys): the sshd drop-in is a
//    conffile and stays until purge; purge removes configuration, keys, state, images and users.

/** Where the package puts Navigator (the runtime, the build, what the depot starts). */
export const PREFIX = '/usr/lib/navigator';

export interface ControlFields {
  version: string;
  /** Installed size in KiB. */
  installedKiB: number;
}

export const DEPENDS = [
  'libc6 (>= 2.28)',
  'libstdc++6',
  'libgcc-s1',
  'openssh-server',
  'iproute2',
  'iputils-arping',
  // The depot (an unprivileged user) starts its containers' units through polkit's rule.
  'polkitd',
  'passwd',
  'procps',
  'util-linux',
  'init-system-helpers',
];

export function renderControl(f: ControlFields): string {
  return [
    'Package: navigator',
    `Version: ${f.version}`,
    'Architecture: amd64',
    'Section: admin',
    'Priority: optional',
    'Maintainer: Navigator maintainers <navigator@localhost>',
    `Installed-Size: ${f.installedKiB}`,
    `Depends: ${DEPENDS.join(', ')}`,
    'Recommends: mariadb-client',
    'Description: keeps a monitoring service available on a LAN without HA hardware',
    ' A depot on every workstation gossips uptime and resources with the others over',
    ' libp2p; a pilot next to each copy of the service (a Zabbix server with its',
    ' database, as a VM or as processes) keeps one primary and warm standbys, moves',
    ' the service address to a standby in about two seconds when the primary host',
    ' dies, and ships images between hosts over SFTP with no SSH set-up by hand.',
    ' .',
    ' This package holds its own Node.js 22 runtime and the bundled build.',
    '',
  ].join('\n');
}

export function renderConffiles(): string {
  return `${SSHD_DROPIN_PATH}\n`;
}

const HEADER = (name: string) => [`#!/bin/sh`, `# ${name} of the navigator package (made by depot/install/debian/maintainer-scripts.ts).`, 'set -e', `UNIT=${UNIT_NAME}`, ''];

export function renderPostinst(): string {
  return [
    ...HEADER('postinst'),
    'if [ "$1" = configure ]; then',
    '  # Users, folders with their owners and modes, the swarm key (kept, or made when there is',
    '  # none), the SFTP key pair, the config: the code of `navigator depot install`.',
    `  ${PREFIX}/bin/node ${PREFIX}/bin/navigator.mjs depot install --packaged`,
    'fi',
    'if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then',
    '  deb-systemd-helper unmask "$UNIT" >/dev/null || true',
    '  if deb-systemd-helper --quiet was-enabled "$UNIT"; then',
    '    deb-systemd-helper enable "$UNIT" >/dev/null || true',
    '  else',
    '    deb-systemd-helper update-state "$UNIT" >/dev/null || true',
    '  fi',
    '  if [ -d /run/systemd/system ]; then',
    '    systemctl --system daemon-reload >/dev/null || true',
    '    # New logins of the receive account get the sshd drop-in.',
    '    systemctl try-reload-or-restart ssh.service >/dev/null 2>&1 || true',
    '    deb-systemd-invoke start "$UNIT" >/dev/null || true',
    '  fi',
    'fi',
    'exit 0',
    '',
  ].join('\n');
}

export function renderPrerm(l: InstallLayout): string {
  const accounts = [l.serviceUser, l.depotUser];
  return [
    ...HEADER('prerm'),
    'if [ -d /run/systemd/system ] && { [ "$1" = remove ] || [ "$1" = upgrade ] || [ "$1" = deconfigure ]; }; then',
    '  # A clean stop: a primary here hands its service to a standby first (TimeoutStopSec bounds it).',
    '  deb-systemd-invoke stop "$UNIT" >/dev/null || true',
    'fi',
    'if [ "$1" = remove ]; then',
    '  # The service containers outlive a depot restart; removed, nothing would supervise them.',
    `  for u in ${accounts.join(' ')}; do pkill -TERM -u "$u" 2>/dev/null || true; done`,
    '  i=0',
    `  while [ $i -lt 50 ] && { ${accounts.map((u) => `pgrep -u ${u} >/dev/null 2>&1`).join(' || ')}; }; do sleep 0.1; i=$((i + 1)); done`,
    `  for u in ${accounts.join(' ')}; do pkill -KILL -u "$u" 2>/dev/null || true; done`,
    'fi',
    'exit 0',
    '',
  ].join('\n');
}

export function renderPostrm(l: InstallLayout): string {
  return [
    ...HEADER('postrm'),
    'if [ "$1" = remove ]; then',
    '  # Nobody may log in to the receive account once the depot is gone.',
    `  rm -f ${authorizedKeysPath(l)}`,
    '  if [ -x /usr/bin/deb-systemd-helper ]; then deb-systemd-helper mask "$UNIT" >/dev/null || true; fi',
    'fi',
    'if [ "$1" = purge ]; then',
    '  # Configuration, swarm key, SSH keys and pins, state, images, and the system users.',
    `  rm -rf ${purgedPaths(l).join(' ')}`,
    `  for u in ${[...users(l)].reverse().map((u) => u.name).join(' ')}; do`,
    '    if getent passwd "$u" >/dev/null; then userdel "$u" >/dev/null 2>&1 || true; fi',
    '  done',
    '  if [ -x /usr/bin/deb-systemd-helper ]; then',
    '    deb-systemd-helper purge "$UNIT" >/dev/null || true',
    '    deb-systemd-helper unmask "$UNIT" >/dev/null || true',
    '  fi',
    'fi',
    'if [ "$1" = remove ] || [ "$1" = purge ]; then',
    '  if [ -d /run/systemd/system ]; then',
    '    systemctl --system daemon-reload >/dev/null || true',
    '    systemctl try-reload-or-restart ssh.service >/dev/null 2>&1 || true',
    '  fi',
    'fi',
    'exit 0',
    '',
  ].join('\n');
}
