import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { NavigatorError } from './errors.ts';
import { AlertsSection } from './config-alerts.ts';
import { PolicySection } from './config-policy.ts';

// The whole configuration of a depot and the pilots inside it. Every field has a default and a
// one-line description: the schema is the reference (README, `navigator config check`, the
// commented default file are all generated from it). Sections are strict so a typo is refused
// instead of silently ignored.

const ms = (def: number, what: string) => z.number().int().positive().default(def).describe(what);

export const NodeSection = z
  .object({
    name: z.string().min(1).max(63).default(hostname()).describe('Name of this depot as shown to others (default: host name)'),
    dataDir: z.string().min(1).default('/var/lib/navigator').describe('State folder: identity key, journal, image store'),
  })
  .strict();

export const NetworkSection = z
  .object({
    listen: z
      .array(z.string())
      .default(['/ip4/0.0.0.0/tcp/7470'])
      .describe('libp2p listen multiaddrs'),
    announce: z.array(z.string()).default([]).describe('Multiaddrs to announce instead of the listen ones (NAT, several interfaces)'),
    bootstrap: z.array(z.string()).default([]).describe('Multiaddrs (with /p2p/ID) of depots to dial at start, in addition to mDNS'),
    mdns: z.boolean().default(true).describe('Find other depots on the LAN with mDNS'),
    mdnsIntervalMs: ms(5000, 'How often mDNS queries the LAN'),
    maxConnections: z.number().int().min(1).default(300).describe('Most libp2p connections this depot keeps open (the cluster is a full mesh: one per other depot)'),
    swarmKeyFile: z
      .string()
      .default('/etc/navigator/swarm.key')
      .describe('Private network pre-shared key (made by `navigator keygen`); peers without it cannot connect'),
    identityFile: z
      .string()
      .default('')
      .describe('Private key of this depot\'s peer id (default: DATADIR/identity.key, created on first start)'),
  })
  .strict();

export const MembershipSection = z
  .object({
    heartbeatMs: ms(1000, 'How often a depot samples its heartbeat (resources, images, containers) and gossips it if it changed'),
    heartbeatRefreshMs: ms(30_000, 'Longest time between two heartbeats of a depot, changed or not (also bounds how long a lost one leaves a view stale)'),
    probeIntervalMs: z.number().int().nonnegative().default(1000).describe('Each depot probes one other depot per interval, round-robin (SWIM); 0 turns routine probes off'),
    suspectAfterMissed: z.number().int().min(1).default(3).describe('Refresh intervals with nothing heard from a depot (no heartbeat, no probe answer) before it is suspect and probed'),
    probeTimeoutMs: ms(500, 'Timeout of one direct or indirect ping'),
    indirectProbes: z.number().int().min(0).default(2).describe('How many other depots are asked to ping a suspect (SWIM)'),
    suspectTimeoutMs: ms(1500, 'Longest time a depot stays suspect before it is declared dead if no probe succeeds'),
    forgetAfterMs: ms(3_600_000, 'Dead or left depots are removed from the view after this long'),
    maxMessageBytes: z.number().int().min(1024).max(1_048_576).default(65_536).describe('Largest gossip message accepted; larger ones are dropped and counted'),
    leftFlushMs: ms(250, 'After announcing `left` at a clean stop, the node stays up this long so the message gets out'),
    addressesTtlMs: ms(10_000, "Longest time this depot's own address list is reused in heartbeats (it is also refreshed when libp2p reports a change)"),
    hostAddressesTtlMs: ms(5000, "Longest time the host's interface addresses are reused in heartbeats (reading them is a netlink dump of every interface)"),
    figuresMinIntervalMs: ms(30_000, 'Host figures (load, free memory and disk) that moved enough are gossiped at most this often; what other depots act on (images, containers, addresses) goes out at once'),
    lagWindowMs: ms(5000, "How far back a depot looks at its own event-loop delay to give pings extra time while it is starved (it must not blame others for its own slowness)"),
    maxLagAllowanceMs: z.number().int().nonnegative().default(4000).describe('Most extra time a starved depot gives a ping: twice its worst event-loop delay within lagWindowMs, capped at this (0: none)'),
  })
  .strict()
  .refine((m) => m.heartbeatRefreshMs >= m.heartbeatMs, { path: ['heartbeatRefreshMs'], message: 'must be at least heartbeatMs' });

export const ConnectionsSection = z
  .object({
    redialMs: ms(5000, 'Least time between two dial attempts to the same unconnected depot (bootstrap depots are retried this often)'),
    redialMaxMs: ms(30_000, 'A depot that is not heard alive and whose dials keep failing (off, not started yet) is retried less and less often: after redialMs, then doubling up to this'),
    dialTimeoutMs: ms(5000, 'A dial that has not connected within this long is given up'),
    reconnectDelayMs: ms(1000, 'Wait before dialling again a depot whose connection closed while it is still alive'),
    linkCheckMs: ms(2000, 'How often the gossip streams of every connection are checked'),
    linkGraceMs: ms(15_000, 'How long a connection may lack its gossip streams (set-up included) before it is closed and dialled again'),
    deadHangUpMs: ms(30_000, 'A depot still dead this long after the verdict has its connections closed'),
    memberExchangeFastMs: ms(1000, 'Push-pull member exchange with a random peer (memberlist) this often while the depot is starting...'),
    memberExchangeFastWindowMs: ms(30_000, '...for this long after start (depots that start together know only their bootstrap peer at first)'),
    memberExchangeMs: ms(30_000, '...then this often'),
  })
  .strict();

export const ControlSection = z
  .object({
    readTimeoutMs: ms(10_000, 'Longest wait for a control request after its stream opened'),
    maxRequestMs: ms(600_000, 'Longest time one control method may run before the caller gets TIMEOUT'),
    maxInboundStreams: z.number().int().min(1).max(1024).default(16).describe('Control streams one connection may have open at once'),
    callTimeoutMs: ms(30_000, 'Default time a control call to another depot waits for its answer'),
  })
  .strict();

export const JournalSection = z
  .object({
    initialFillWindowMs: ms(30_000, 'At start, how long to wait for a peer to fetch the movements missed while this depot was down'),
    refillSpreadMs: ms(5000, 'When a depot comes back, the depots that ask it for missed movements spread their requests over this long'),
    refillMinIntervalMs: ms(60_000, 'A depot that came back is asked for missed movements at most this often (a flapping depot must not cause a storm)'),
    gapSlackMs: ms(300_000, 'Gap filling asks a peer for every movement from the newest one held here minus this (covers clock differences between hosts)'),
    fetchTimeoutMs: ms(5000, 'A gap-filling request to a peer, and the answer to one from a peer, is given up after this long'),
  })
  .strict();

export const SessionsSection = z
  .object({
    file: z.string().default('').describe("This host's recorded sessions (start, clean stop or loss); default <node.dataDir>/sessions.json"),
    markMs: ms(60_000, 'While running, the last sign of life is written this often: after a power cut the session counts as ended at the last mark'),
    rejoinMs: ms(300_000, 'A depot started again this soon after its last sign of life, on the same host boot, continues the session (a restart is not the end of the day)'),
    keep: z.number().int().min(1).max(10_000).default(500).describe('Sessions kept in the file (oldest dropped first)'),
    gossip: z.number().int().min(0).max(32).default(21).describe('Most recent ended sessions carried in the heartbeat for placement and voter ranking (0: none)'),
    maxAgeMs: ms(28 * 24 * 3600_000, 'Sessions that ended longer ago than this are no longer gossiped'),
  })
  .strict();

/** Navigator's own cgroups (the package's units and the direct runner's folder), relative to the hierarchy's root. */
export const NAVIGATOR_CGROUPS = ['navigator', 'system.slice/navigator-depot.service', 'system.slice/system-navigator\\x2dctr.slice', 'system.slice/system-navigator\\x2dctr\\x2donce.slice'];

export const BusySection = z
  .object({
    enabled: z.boolean().default(true).describe("Move a primary off this host by a planned switchover when the host stays busy with its user's work (this depot measures and gossips its host's busy signal either way)"),
    cpuPct: z
      .number()
      .min(1)
      .max(100)
      .default(50)
      .describe("The host is busy while its user's work (the CPU use of `cgroup`, less `excludeCgroups` and the depot itself) takes at least this percentage of all its CPUs, averaged over sampleMs"),
    sessions: z.boolean().default(true).describe('An active local login session (graphical or text console, as systemd-logind records them, what `loginctl list-sessions` shows; remote ones do not count) makes the host busy too'),
    sampleMs: ms(5000, 'The CPU use is measured this often; each sample is the average since the one before'),
    sustainMs: ms(120_000, 'The primary moves away once its host has been busy this long without a break (a quiet sample starts the count again)'),
    minIntervalMs: ms(1_800_000, 'Hysteresis: at least this long between two busy moves of one service, whichever depots made them (read from the movement journal)'),
    cgroup: z
      .string()
      .default('')
      .describe("Folder of the cgroup whose CPU use counts as the host's work: cgroup v2 (cpu.stat) or a v1 cpuacct folder (cpuacct.usage). Empty: the root of the host's CPU accounting hierarchy (the whole host). The lab gives each workstation its own"),
    excludeCgroups: z
      .array(z.string().min(1).max(1024))
      .max(32)
      .default(NAVIGATOR_CGROUPS)
      .describe("cgroups whose CPU use is subtracted (Navigator's own: the depot's unit and the service containers), relative to the hierarchy's root or absolute; missing ones are skipped"),
  })
  .strict();

export const HttpSection = z
  .object({
    host: z.string().default('0.0.0.0').describe('Address the tracking page and read-only API listen on'),
    port: z.number().int().min(0).max(65535).default(7480).describe('Port of the tracking page, API and metrics (0: any free port)'),
    adminHost: z.string().default('127.0.0.1').describe('Mutating endpoints (switchover, drain) are only served to clients from this address'),
    adminToken: z.string().default('').describe('Bearer token for mutating endpoints; empty disables them'),
  })
  .strict();

export const LogSection = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Log level'),
  })
  .strict();

export const StoreSection = z
  .object({
    dir: z.string().default('').describe('Image store folder (default: DATADIR/images)'),
    keepVersions: z.number().int().min(1).default(3).describe('Versions of each image kept; older ones are removed'),
    blockBytes: z
      .number()
      .int()
      .min(65_536)
      .max(67_108_864)
      .default(4_194_304)
      .describe('Block size of the per-block hashes of images imported here (unit of resume and delta)'),
    spareCopies: z
      .boolean()
      .default(true)
      .describe('Keep a spare copy of the newest version of each large image, so the next delta starts without a full local copy (costs one image of disk; dropped when space is needed)'),
    spareMinBytes: z.number().int().nonnegative().default(268_435_456).describe('Images smaller than this get no spare copy (copying them for a delta is quick anyway)'),
    spareDelayMs: z.number().int().nonnegative().default(500).describe('Spare copies are made once the store has been quiet (no import, verify, clone or receive) this long, so they do not compete with the clone that often follows a receive'),
    stagingMaxAgeMs: z
      .number()
      .int()
      .positive()
      .default(86_400_000)
      .describe('At start, a staging folder (an unfinished receive) not written to for this long is removed; younger ones are kept for the sender to resume'),
  })
  .strict();

export const PilotSection = z
  .object({
    leaseMs: ms(1500, 'Primary lease granted by a majority of voters; a voter promises no other vote until it expires'),
    leaseSafetyMarginMs: ms(300, 'A primary fences itself this long before its lease would expire without renewal (checked against leaseMs, maxClockDriftRate and fenceLatencyMs at start)'),
    witness: z
      .string()
      .default('')
      .refine((s) => s === '' || /^\/(ip4|ip6|dns4|dns6|dns)\/[^/]+\/tcp\/\d+\/p2p\/[A-Za-z0-9]+$/.test(s), {
        message: 'must be the multiaddr `navigator witness` prints, e.g. /ip4/10.0.0.9/tcp/7490/p2p/12D3KooW…',
      })
      .describe('Multiaddr (with /p2p/ID) of a `navigator witness` that votes as a third voter when a service has only two voters; empty: no witness (a ping-only gateway cannot vote safely, see pilot/election/views.ts)'),
    standbys: z.number().int().min(0).max(8).default(1).describe('Standby copies kept for each service'),
    probeIntervalMs: ms(250, 'Interval of service health probes'),
    serviceProbeTimeoutMs: ms(300, "Timeout of one service probe (TCP connect to the service address) and of the standby's ping of the primary's depot; well under the lease, so a dead primary is noticed in one probe round"),
    reassertMs: ms(5000, 'The primary re-announces its address (gratuitous ARP) this often'),
    copyRestartMs: ms(30_000, "A standby starts its own copy again when it is not running, at most this often"),
    ownSyncReadMs: ms(2000, 'A standby reads the time of its last good DB sync from its own database this often'),
    restartInPlace: z.boolean().default(true).describe('Restart a failed service once on a healthy host before failing over'),
    restartGraceMs: ms(5000, 'After a restart in place, failed service probes are ignored this long (the service is booting)'),
    restartResetMs: ms(60_000, 'The one restart in place is available again after this long of healthy service'),
    serviceDownFailoverMs: ms(10_000, "A standby stands for election when the service has been down this long although the primary's depot answers"),
    electionRetryMs: ms(150, "A candidate's vote round lasts this long (plus up to 100 % jitter per pilot) before it asks again"),
    syncInfoTtlMs: ms(5000, "A voter counts a standby's DB sync time heard in its heartbeat this long, for the freshest-copy rule"),
    maxClockDriftRate: z.number().min(0).max(0.2).default(0.01).describe('Bound ρ on clock rate error (0.01 = every clock runs within ±1 % of real time); the safety margin is checked against it'),
    fenceLatencyMs: z.number().int().min(0).default(100).describe('Longest time from a fence decision until the service is stopped and the address dropped'),
    handOverMs: ms(
      30_000,
      'At a clean stop of this depot (systemctl stop, a package upgrade) each primary here is handed to the freshest standby (a final DB sync included) within this long; then the depot stops anyway',
    ),
    placementRetryMs: ms(30_000, 'After a failed standby placement on a host (image transfer, container start) that host is tried again no sooner than this; other hosts are tried at once'),
    placedGraceMs: ms(10_000, "A just-placed standby counts this long before its depot's heartbeat shows it (heartbeats lag)"),
    supervisorBackoffMs: z
      .array(z.number().int().positive())
      .min(1)
      .default([1000, 2000, 5000, 10_000, 30_000])
      .describe('Waits before restarting a pilot that failed, one per attempt in a row (the last repeats)'),
  })
  .strict();

export const ElectionSection = z
  .object({
    voters: z
      .number()
      .int()
      .min(1)
      .max(63)
      .refine((n) => n % 2 === 1, { message: 'must be odd (an even group survives no more losses than the odd one below it)' })
      .default(5)
      .describe('Size of the voter group of each service: only these depots vote and renew the lease, so its cost does not grow with the cluster; every depot when there are fewer (kept odd)'),
    preferredVoters: z
      .array(z.string().min(1).max(253))
      .max(63)
      .default([])
      .describe('Host names of always-on machines preferred as voters (they rank first and displace other voters when alive)'),
  })
  .strict();

export const ShipSection = z
  .object({
    sshPort: z.number().int().min(1).max(65535).default(22).describe("Port of this host's sshd; advertised in the heartbeat so senders write images shipped here to it"),
    sshUser: z
      .string()
      .default('navigator-recv')
      .describe("Account the SFTP transfers log in as on the receiving depot's sshd (the package's receive-only account: SFTP only, chrooted, keys of the current swarm members)"),
    sshKeyFile: z
      .string()
      .default('')
      .describe("This depot's SFTP private key (key authentication only), announced to the others in its heartbeat (default: DATADIR/ssh/id_ed25519, made at install or first start)"),
    knownHostsFile: z
      .string()
      .default('')
      .describe("Optional override: pinned host keys in OpenSSH known_hosts format. Empty: each depot's sshd host key is pinned from its signed heartbeat (DATADIR/ssh/host-keys.json); unknown or changed keys are refused either way"),
    hostKeyFile: z
      .string()
      .default('/etc/ssh/ssh_host_ed25519_key.pub')
      .describe("This host's sshd Ed25519 host public key; its fingerprint goes into the heartbeat so senders pin it (empty: none announced, nothing can be shipped here)"),
    authorizedKeysFile: z
      .string()
      .default('')
      .describe('Kept equal to the SFTP keys of the current swarm members; sshd reads it for the receive account (default: DATADIR/ssh/authorized_keys)'),
    receiveChroot: z
      .string()
      .default('')
      .describe("Folder sshd chroots the receive account into (the package: the image store folder); image.prepare then names the folder to write in as the sender sees it inside. Empty: not chrooted"),
    requestsInFlight: z.number().int().min(1).max(256).default(64).describe('Parallel SFTP write requests per transfer (shared by its connections)'),
    connections: z
      .number()
      .int()
      .min(1)
      .max(16)
      .default(2)
      .describe('SSH connections per transfer, each an SFTP session writing different blocks; more than one keeps both ends busy'),
    prestageCandidates: z.number().int().min(0).default(2).describe('Top placement candidates the primary keeps a copy of the current image on, in the background (0: no pre-staging)'),
    prestageBandwidthPct: z.number().min(1).max(100).default(50).describe('Pre-staging bandwidth limit as a percentage of the link'),
    linkMbps: z.number().positive().default(1000).describe('Link speed used to compute the pre-staging limit'),
    chunkBytes: z
      .number()
      .int()
      .min(4096)
      .max(261_120)
      .default(261_120)
      .describe('Bytes per SFTP write request (OpenSSH sftp-server takes at most 255 KiB per write)'),
    stallTimeoutMs: ms(30_000, 'A transfer with writes in flight and no reply for this long is failed (then resumed later)'),
    singleConnectionBytes: z.number().int().nonnegative().default(67_108_864).describe('Transfers that send less than this use one SSH connection (logging in more costs more than it gains)'),
    prestageRoundMs: ms(5000, 'A pre-staging round per image at most this often (the primary asks at every service probe)'),
    prestageWantedMs: ms(30_000, 'Queued pre-stages of an image are dropped when no primary round asked for it this long (the pilot here was demoted)'),
    prestageRetryMs: ms(60_000, 'After a failed pre-stage, that host is passed over this long'),
  })
  .strict();

const cpuWeight = z.number().int().min(1).max(10_000).describe("CPU share against the host's other work when the CPU is contended (systemd CPUWeight; a user's processes have 100): idle CPU is still the container's");
const cpuMax = z.number().positive().max(4096).describe('Hard cap in CPUs (0.5 = half of one CPU), even when the host is idle; unset: none');
const memoryMax = z.number().int().positive().describe('Hard memory cap in bytes (the container is killed by the kernel above it); unset: none');
const ioWeight = z.number().int().min(1).max(10_000).describe("Disk IO share against the host's other work (systemd IOWeight; others have 100)");

/** What a service container may take from the workstation it runs on (its own cgroup): the lab PC's user comes first. */
export const ContainerLimits = z
  .object({ cpuWeight: cpuWeight.default(5), cpuMax: cpuMax.optional(), memoryMax: memoryMax.optional(), ioWeight: ioWeight.default(10) })
  .strict();
/** A service's own limits: only the fields it sets replace the host's. */
export const ServiceLimits = z.object({ cpuWeight: cpuWeight.optional(), cpuMax: cpuMax.optional(), memoryMax: memoryMax.optional(), ioWeight: ioWeight.optional() }).strict();
export type ContainerLimits = z.infer<typeof ContainerLimits>;

export const ContainersSection = z
  .object({
    statusIntervalMs: z
      .number()
      .int()
      .nonnegative()
      .default(0)
      .describe('How often the state of every container is checked, so one that died on its own shows as failed (0: every membership.heartbeatMs, so each heartbeat reports fresh states)'),
    processPrimaryStopMs: ms(10_000, "A process container's primary-only commands get this long after SIGTERM before SIGKILL (demotion, stop)"),
    processTermRepeatMs: ms(1000, 'A process container without a stop command is sent SIGTERM again this often until it exits (a service still starting may ignore the first) or the stop deadline forces it'),
    qemuStartTimeoutMs: ms(15_000, 'Longest wait for a started QEMU to answer on its QMP socket'),
    vmrunCommandTimeoutMs: ms(120_000, 'Longest time one vmrun command may run when its caller sets no deadline of its own'),
    limits: ContainerLimits.prefault({}).describe('Limits of every service container on this host (process driver: its own cgroup)'),
    serviceLimits: z
      .record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,47}$/, 'a service name is 1-48 lower-case letters, digits or dashes'), ServiceLimits)
      .default({})
      .describe('Per service: fields that replace those of `limits` for its containers'),
    limitsEnabled: z.boolean().default(true).describe('Put service containers in a cgroup of their own with the limits above (false: run them in the depot\'s)'),
    runner: z
      .enum(['auto', 'systemd', 'direct'])
      .default('auto')
      .describe('How process containers\' commands run. systemd: each in a unit of its own, navigator-ctr@<container>:<step>.service (a template of the package: the service user, no capabilities), limits as unit properties, outliving a depot restart; direct: children of the depot in a cgroup it writes (dropping to `serviceUser` when the depot is root). auto: systemd when systemd is PID 1 and `serviceUser` exists, else direct'),
    serviceUser: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a system user name')
      .default('navigator-svc')
      .describe('System user the service containers run as (made by the package and `navigator depot install`); a depot without it runs them as itself'),
    passEnv: z
      .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name'))
      .max(64)
      .default([])
      .describe("Names of this depot's environment variables its service containers' commands also get (besides PATH, HOME, LANG and the manifest's env), e.g. a per-host value; none by default"),
  })
  .strict();

export const DbSyncSection = z
  .object({
    mode: z
      .enum(['replicate', 'semisync', 'dump'])
      .default('replicate')
      .describe(
        "How standbys' databases follow the primary's: replicate (MariaDB GTID replication, seeded by a consistent dump; the copy's server needs log-bin and log-slave-updates), semisync (the same, and a commit is acknowledged once a standby has it; MariaDB falls back to async after semisyncTimeoutMs without an answer), dump (a full mysqldump every syncIntervalMs, for databases that cannot replicate)",
      ),
    heartbeatMs: ms(250, 'replicate/semisync: the primary writes its clock into DB__nav_repl.beat this often; a standby reports the newest value it holds as its freshness (lastSyncAt), so the RPO is known to this precision'),
    replicaCheckMs: ms(2000, "replicate/semisync: the primary checks each standby's replication this often (seeds, re-points or reseeds it as needed, with retryBaseMs/retryBackoffMaxMs backoff after a failure)"),
    catchUpTimeoutMs: ms(30_000, 'replicate/semisync: at a planned hand-over (switchover, drain, clean stop) the primary stops writes and waits this long for the standbys to hold every transaction; when none does in time, writes resume and the hand-over fails'),
    promoteApplyTimeoutMs: ms(10_000, 'replicate/semisync: a standby being promoted waits this long to apply what it already received before it stops replicating'),
    semisyncTimeoutMs: ms(1000, 'semisync: a commit waits this long for a standby to acknowledge it before MariaDB falls back to async replication (rpl_semi_sync_master_timeout)'),
    replicationUser: z
      .string()
      .regex(/^[A-Za-z0-9_]{1,32}$/)
      .default('navigator_repl')
      .describe("Account standbys replicate with (created on the primary with REPLICATION SLAVE only; its password is derived from the service database's password and only ever travels in SQL over the client connection)"),
    syncIntervalMs: ms(60_000, 'Interval between mysqldump syncs from primary to standbys'),
    retryBackoffMaxMs: ms(300_000, 'Longest wait between retries of a failing sync'),
    retryBaseMs: ms(5_000, 'Wait before the first retry of a failed sync; doubles after each further failure up to retryBackoffMaxMs'),
    syncTimeoutMs: ms(1_800_000, 'A dump and load taking longer than this is killed and counted as a failure'),
    swapLockWaitS: z.number().int().min(1).max(3600).default(30).describe('Longest wait (s) for readers of the standby copy to let go of its tables at the swap (lock_wait_timeout); also bounds SET GLOBAL read_only on the primary'),
    checksums: z.boolean().default(true).describe('Record CHECKSUM TABLE of every table of each synced copy (a full read of the copy; row counts are always recorded)'),
    dumpCommand: z.string().default('').describe('mysqldump program (default: mariadb-dump if installed, else mysqldump)'),
    clientCommand: z.string().default('').describe('mysql client program that loads the dump (default: mariadb if installed, else mysql)'),
  })
  .strict();

export const RecoverySection = z
  .object({
    enabled: z.boolean().default(true).describe('Last-resort recovery: when every copy of a service is lost, a live depot holding its image and a recovery kit starts it from the image and the freshest database copy (pilot/last-resort.ts)'),
    lostGraceMs: ms(3000, 'Every copy must have been lost (its depot dead or gone by the membership layer) this long before a recovery starts (and at least pilot.leaseMs after the last word heard from any copy)'),
    checkMs: ms(1000, 'How often a depot holding a recovery kit checks whether every copy of its service is lost'),
    kitIntervalMs: ms(10_000, "How often the primary hands its recovery kit (service spec, voter group, term) to the pre-staging targets that hold the image (ship.prestageCandidates)"),
    dbCopyIntervalMs: ms(30_000, "How often a kit holder refreshes its database copy: a gzip'd mariadb-dump of the primary's database, written durably beside the image (the recovery's worst-case data loss is about this plus the dump's duration)"),
    dbCopyTimeoutMs: ms(300_000, 'A database copy (dump over the network) taking longer than this is killed and counted as failed; the previous copy is kept'),
    dbCopyBytesPerSec: z
      .number()
      .int()
      .positive()
      .default(4_194_304)
      .describe("A kit holder reads the primary's dump at most this fast (bytes of SQL per second), so the primary's database server does the work spread out rather than in one burst"),
    dbCopyMaxBytes: z.number().int().positive().default(1_073_741_824).describe('Largest compressed database copy a kit holder keeps (a larger dump fails; the previous copy is kept)'),
    kitStaleMs: ms(120_000, 'A kit holder stops refreshing its database copy when no primary handed it the kit this long (the copy and the kit stay for a recovery)'),
  })
  .strict();

export const ConfigSchema = z
  .object({
    node: NodeSection.prefault({}),
    network: NetworkSection.prefault({}),
    membership: MembershipSection.prefault({}),
    connections: ConnectionsSection.prefault({}),
    control: ControlSection.prefault({}),
    journal: JournalSection.prefault({}),
    sessions: SessionsSection.prefault({}),
    busy: BusySection.prefault({}),
    http: HttpSection.prefault({}),
    log: LogSection.prefault({}),
    store: StoreSection.prefault({}),
    pilot: PilotSection.prefault({}),
    election: ElectionSection.prefault({}),
    ship: ShipSection.prefault({}),
    containers: ContainersSection.prefault({}),
    dbsync: DbSyncSection.prefault({}),
    alerts: AlertsSection.prefault({}),
    policy: PolicySection.prefault({}),
    recovery: RecoverySection.prefault({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;

export const DEFAULT_CONFIG_PATH = '/etc/navigator/navigator.yaml';
export const ENV_PREFIX = 'NAVIGATOR__';

/** Human-readable list of zod issues: one `path: reason` per line. */
export function formatIssues(error: z.ZodError, source: string): string {
  const lines = error.issues.map((i) => {
    const path = i.path.length ? i.path.join('.') : '(top level)';
    return `  ${path}: ${i.message}`;
  });
  return `invalid configuration in ${source}:\n${lines.join('\n')}`;
}

/**
 * Environment overrides: NAVIGATOR__section__field=value, e.g. NAVIGATOR__http__port=7481.
 * Values are parsed as YAML scalars/flow values, so numbers, booleans and [lists] work.
 */
export function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(env)) {
    if (!key.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const path = key.slice(ENV_PREFIX.length).split('__').filter(Boolean);
    if (path.length === 0) continue;
    let value: unknown;
    try {
      value = parseYaml(raw);
    } catch {
      value = raw;
    }
    let cursor: Record<string, unknown> = out;
    for (const part of path.slice(0, -1)) {
      const next = cursor[part];
      cursor = (typeof next === 'object' && next !== null ? next : (cursor[part] = {})) as Record<string, unknown>;
    }
    cursor[path[path.length - 1]!] = value ?? '';
  }
  return out;
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    if (v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)) {
      out[k] = deepMerge(b as Record<string, unknown>, v as Record<string, unknown>);
    } else {
      out[k] = v;
    }
  }
  return out;
}

/** Validate an already-parsed object (file content merged with overrides). */
export function parseConfig(input: unknown, source = 'configuration'): Config {
  const result = ConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    throw new NavigatorError('CONFIG_INVALID', formatIssues(result.error, source), {
      issues: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  const cfg = resolveDerived(result.data);
  const chroot = cfg.ship.receiveChroot.replace(/\/+$/, '');
  if (chroot && !(cfg.store.dir === chroot || cfg.store.dir.startsWith(`${chroot}/`))) {
    // The sender writes inside the chroot: a store outside it could never receive anything.
    throw new NavigatorError('CONFIG_INVALID', `invalid configuration in ${source}:\n  ship.receiveChroot: ${chroot} must contain store.dir (${cfg.store.dir})`, {
      issues: [{ path: 'ship.receiveChroot', message: `must contain store.dir (${cfg.store.dir})` }],
    });
  }
  return cfg;
}

/** Fill the fields whose defaults depend on other fields. */
function resolveDerived(cfg: Config): Config {
  return {
    ...cfg,
    network: { ...cfg.network, identityFile: cfg.network.identityFile || `${cfg.node.dataDir}/identity.key` },
    store: { ...cfg.store, dir: cfg.store.dir || `${cfg.node.dataDir}/images` },
    sessions: { ...cfg.sessions, file: cfg.sessions.file || `${cfg.node.dataDir}/sessions.json` },
    containers: { ...cfg.containers, statusIntervalMs: cfg.containers.statusIntervalMs || cfg.membership.heartbeatMs },
    ship: {
      ...cfg.ship,
      sshKeyFile: cfg.ship.sshKeyFile || `${cfg.node.dataDir}/ssh/id_ed25519`,
      authorizedKeysFile: cfg.ship.authorizedKeysFile || `${cfg.node.dataDir}/ssh/authorized_keys`,
    },
  };
}

export interface LoadOptions {
  /** Path of the YAML file; a missing file is an error only when the path was given explicitly. */
  path?: string;
  env?: NodeJS.ProcessEnv;
  /** Applied last (CLI flags). */
  overrides?: Record<string, unknown>;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const explicit = opts.path !== undefined;
  const path = opts.path ?? DEFAULT_CONFIG_PATH;
  let fileData: unknown = {};
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (explicit) {
      throw new NavigatorError('CONFIG_NOT_FOUND', `cannot read configuration file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  if (text !== undefined) {
    try {
      fileData = parseYaml(text) ?? {};
    } catch (err) {
      const where = err instanceof YAMLParseError && err.linePos ? ` (line ${err.linePos[0].line}, column ${err.linePos[0].col})` : '';
      throw new NavigatorError('CONFIG_INVALID', `invalid configuration in ${path}: not valid YAML${where}: ${(err as Error).message.split('\n')[0]}`);
    }
    if (typeof fileData !== 'object' || Array.isArray(fileData)) {
      throw new NavigatorError('CONFIG_INVALID', `invalid configuration in ${path}: the top level must be a mapping of sections`);
    }
  }
  const merged = deepMerge(
    deepMerge(fileData as Record<string, unknown>, envOverrides(opts.env ?? process.env)),
    opts.overrides ?? {},
  );
  return parseConfig(merged, text !== undefined ? path : 'defaults and environment');
}

/** Every field with its default and description, for docs and the commented default file. */
export function describeConfig(): Array<{ section: string; field: string; default: unknown; description: string }> {
  const rows: Array<{ section: string; field: string; default: unknown; description: string }> = [];
  const defaults = ConfigSchema.parse({}) as Record<string, Record<string, unknown>>;
  for (const [section, schema] of Object.entries(ConfigSchema.shape)) {
    const inner = (schema as unknown as { unwrap(): z.ZodObject }).unwrap();
    for (const [field, fieldSchema] of Object.entries(inner.shape)) {
      rows.push({
        section,
        field,
        default: defaults[section]?.[field],
        description: (fieldSchema as z.ZodType).description ?? '',
      });
    }
  }
  return rows;
}
