// The navigator-depot.service unit. Pure text generation so it can be verified with
// `systemd-analyze verify` in a test and reviewed by admins before install.

import { DEPOT_ENV, depotArgv } from '../runtime-flags.ts';

export interface UnitOptions {
  /** Absolute path of the Node 22 binary. */
  nodeBinary: string;
  /** Absolute path of bin/navigator.mjs. */
  entry: string;
  configPath: string;
  user: string;
  dataDir: string;
  /** systemd major version: RestartSteps/RestartMaxDelaySec (backoff) exist from 254 on. */
  systemdVersion: number;
}

export const UNIT_NAME = 'navigator-depot.service';

export function renderUnit(o: UnitOptions): string {
  const backoff =
    o.systemdVersion >= 254
      ? ['# Back off from 1 s to 30 s between restarts of a crashing depot.', 'RestartSteps=5', 'RestartMaxDelaySec=30s']
      : ['# systemd < 254 has no restart backoff; StartLimitIntervalSec=0 keeps it retrying every 2 s.'];
  return [
    '[Unit]',
    'Description=Navigator depot: keeps the monitoring service available on this LAN',
    'Documentation=file:///usr/share/doc/navigator/README.md',
    'After=network-online.target',
    'Wants=network-online.target',
    // Never give up restarting: a depot that stays dead is the reference system's failure 6.2.5.
    'StartLimitIntervalSec=0',
    '',
    '[Service]',
    'Type=simple',
    `User=${o.user}`,
    `Group=${o.user}`,
    `ExecStart=${depotArgv(o.nodeBinary, o.entry, ['--config', o.configPath]).join(' ')}`,
    'Restart=always',
    'RestartSec=2s',
    ...backoff,
    // SIGTERM makes the depot announce `left` so the others drop it from the quorum at once.
    'KillSignal=SIGTERM',
    'TimeoutStopSec=20s',
    'Environment=NODE_ENV=production',
    ...Object.entries(DEPOT_ENV).map(([k, v]) => `Environment=${k}=${v}`),
    // Moving the service address needs exactly these two: ip addr (NET_ADMIN) and arping (NET_RAW).
    'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW',
    'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${o.dataDir}`,
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=no',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'RestrictSUIDSGID=yes',
    'RestrictRealtime=yes',
    'RestrictNamespaces=no',
    'LockPersonality=yes',
    // AF_PACKET for arping, AF_NETLINK for ip, AF_UNIX for QMP and mysql sockets.
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET',
    'UMask=0027',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
