// The navigator-depot.service unit. Pure text generation so it can be verified with
// `systemd-analyze verify` in a test and reviewed by admins before install.

import { DEPOT_ENV, depotArgv } from '../runtime-flags.ts';
import { RUN_DIR } from '../containers/runner.ts';

export interface UnitOptions {
  /** Absolute path of the Node 22 binary. */
  nodeBinary: string;
  /** Absolute path of bin/navigator.mjs. */
  entry: string;
  configPath: string;
  user: string;
  /** Folders the depot writes (data folder, image store); everything else is read-only to it. */
  writablePaths: readonly string[];
  /** systemd major version: RestartSteps/RestartMaxDelaySec (backoff) exist from 254 on. */
  systemdVersion: number;
}

export const UNIT_NAME = 'navigator-depot.service';

/**
 * Which processes `systemctl stop/restart` signals. The service containers run in units of their
 * own (depot/containers/runner.ts, navigator-ctr@*.service), outside this unit's cgroup, so a
 * stop or restart of the depot never reaches them. Everything in the depot's cgroup is its own:
 * `control-group` sends SIGTERM to all of it (the depot hands its primaries over; the fence guard
 * waits for the depot's release or exit, at most pilot.handOverMs + 5 s, then drops the address)
 * and SIGKILL to whatever is left after TimeoutStopSec, so no child of an old depot outlives it.
 * Not `mixed`: after a crash it would SIGKILL the fence guard at once, before it dropped the
 * service address.
 */
export const KILL_MODE = 'control-group';

/**
 * Longest clean stop: a primary hands its service over to a standby first (pilot.handOverMs, a
 * final DB sync included), then the depot announces `left`.
 */
export const STOP_TIMEOUT_S = 90;

/** The templates of the service containers' units (depot/containers/runner.ts). */
export const CTR_UNIT_NAMES = ['navigator-ctr@.service', 'navigator-ctr-once@.service'] as const;

/**
 * A service container's command, instance <container>:<step>: as the service user, with no
 * capability and no way to gain one; the depot chooses what runs (the command line it wrote in
 * the container's folder, read by the launcher below) but not as whom. `once`: a one-shot step
 * (`systemctl start` returns when it ended); else a long-running command (returns once it runs).
 */
export function renderContainerUnit(o: { serviceUser: string; containersDir: string; once: boolean }): string {
  // bash: the instance is <container>:<step>; the file holds NUL-separated entries: stdout file,
  // stderr file, then the command ($$ and %% are systemd's escapes of $ and %).
  const launcher = `'f="$$1/$\${2%%%%:*}/${RUN_DIR}/$\${2#*:}"; mapfile -d "" -t a < "$$f" && exec >>"$\${a[0]}" 2>>"$\${a[1]}" && exec "$\${a[@]:2}"'`;
  return [
    '[Unit]',
    `Description=Navigator service container ${o.once ? 'step' : 'command'} %i`,
    'Documentation=file:///usr/share/doc/navigator/README.md',
    // A one-shot step's unit stays when it failed, for its exit status; the depot resets it.
    ...(o.once ? [] : ['CollectMode=inactive-or-failed']),
    '',
    '[Service]',
    o.once ? 'Type=oneshot' : 'Type=exec',
    ...(o.once ? ['TimeoutStartSec=infinity'] : []),
    `User=${o.serviceUser}`,
    `Group=${o.serviceUser}`,
    `ExecStart=/bin/bash -c ${launcher} navigator-ctr ${o.containersDir} %i`,
    // What it makes stays readable and writable for the depot (a member of its group).
    'UMask=0007',
    'NoNewPrivileges=yes',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    'RestrictSUIDSGID=yes',
    'KillMode=control-group',
    'Restart=no',
    '',
  ].join('\n');
}

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
    // SIGTERM: a primary here hands over to a standby, then the depot announces `left` so the
    // others drop it at once (see KILL_MODE for what else gets the signal).
    'KillSignal=SIGTERM',
    `KillMode=${KILL_MODE}`,
    `TimeoutStopSec=${STOP_TIMEOUT_S}s`,
    'Environment=NODE_ENV=production',
    ...Object.entries(DEPOT_ENV).map(([k, v]) => `Environment=${k}=${v}`),
    // Moving the service address needs exactly these two: ip addr (NET_ADMIN) and arping (NET_RAW).
    'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW',
    'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${o.writablePaths.join(' ')}`,
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
