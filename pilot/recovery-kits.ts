import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { ElectionView } from '../shared/wire.ts';
import { errorMessage } from '../shared/errors.ts';
import { writeFileDurable } from '../shared/durable-file.ts';
import type { DepotComponents } from '../depot/components.ts';
import { insideDir } from '../depot/containers/drivers/paths.ts';
import { copiesOf } from './cluster-view.ts';
import type { CopyView } from './pilot.ts';
import { dbAddressOf, isGuestPacked } from './guest-mode.ts';
import { ServiceSpec } from './service-spec.ts';

// The recovery kits this depot holds, for the last-resort recovery (pilot/last-resort.ts). A kit
// is what a host that runs no copy needs to bring a service back when every copy is lost: the
// service spec, the voter group and term the primary last handed over (control method
// recovery.stage, from the primary's depot only), beside the image pre-staging already keeps
// here — and a recent copy of the service's database: every recovery.dbCopyIntervalMs this depot
// dumps the primary's database over the LAN (mariadb-dump --single-transaction, the service's
// sync account, its password read from the image), gzip'd, written durably
// (DATADIR/recovery/<service>/db-<time>.sql.gz, then db.json naming it), the previous copy kept
// until the new one is on disk. The time of each kit's copy goes into the heartbeat
// (recoveryKits), so every depot knows where the freshest one is.
// Why a dump and not a replica: a kit holder runs nothing of the service (no database server
// taking memory and CPU on a workstation's user), and a dump file survives the host's power loss
// as it is.

export const RecoveryKit = z
  .object({
    spec: ServiceSpec,
    view: ElectionView,
    term: z.number().int().nonnegative(),
    /** Depot (name) of the primary that handed the kit over. */
    stagedBy: z.string().max(253).default(''),
  })
  .strict();
export type RecoveryKit = z.infer<typeof RecoveryKit>;

const KitFile = RecoveryKit.extend({ stagedAt: z.number().int().nonnegative() }).strict();
const DbCopyMeta = z
  .object({
    file: z.string().regex(/^db-\d+\.sql\.gz$/),
    at: z.number().int().nonnegative().describe('Dump start (ms): everything committed before is in the copy'),
    bytes: z.number().int().nonnegative(),
    sqlBytes: z.number().int().nonnegative(),
    durationMs: z.number().int().nonnegative(),
    fromHost: z.string().max(253),
  })
  .strict();
export type DbCopyMeta = z.infer<typeof DbCopyMeta>;

interface Held {
  kit: RecoveryKit;
  stagedAt: number;
  db: DbCopyMeta | undefined;
  dumping: boolean;
  lastAttemptAt: number;
  failures: number;
}

export interface RecoveryKitsOptions {
  dir: string;
  self: DepotComponents['self'];
  members: DepotComponents['members'];
  /** Folder of an image's files in the store (the password file of the database is read there). */
  imageFilesDir: (image: string) => string;
  config: Pick<Config, 'recovery' | 'dbsync'>;
  logger: Logger;
  now?: () => number;
}

export class RecoveryKits {
  private readonly held = new Map<string, Held>();
  private readonly log: Logger;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private running: Promise<void>[] = [];

  constructor(private readonly opts: RecoveryKitsOptions) {
    this.log = opts.logger.child({ component: 'recovery-kits' });
    this.now = opts.now ?? Date.now;
  }

  async start(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const service of await readdir(this.opts.dir)) {
      const dir = join(this.opts.dir, service);
      const kit = KitFile.safeParse(await readJson(join(dir, 'kit.json')));
      if (!kit.success) continue;
      const meta = DbCopyMeta.safeParse(await readJson(join(dir, 'db.json')));
      let db: DbCopyMeta | undefined;
      if (meta.success) {
        // The copy counts only if its file is all there (written before db.json named it).
        const size = await stat(join(dir, meta.data.file)).then((s) => s.size, () => -1);
        if (size === meta.data.bytes) db = meta.data;
        else this.log.warn({ event: 'db-copy-unusable', service, file: meta.data.file, size, expected: meta.data.bytes }, 'database copy on disk does not match its record; ignored');
      }
      const { stagedAt, ...k } = kit.data;
      this.held.set(k.spec.name, { kit: k, stagedAt, db, dumping: false, lastAttemptAt: 0, failures: 0 });
    }
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort();
    await Promise.allSettled(this.running);
  }

  /** recovery.stage from the primary's depot: keep (or refresh) the kit. */
  async stage(kit: RecoveryKit): Promise<{ dbAt: number | undefined }> {
    const now = this.now();
    const dir = join(this.opts.dir, kit.spec.name);
    await mkdir(dir, { recursive: true });
    await writeFileDurable(join(dir, 'kit.json'), JSON.stringify({ ...kit, stagedAt: now }));
    const h = this.held.get(kit.spec.name);
    if (h) {
      h.kit = kit;
      h.stagedAt = now;
    } else {
      // The first copy comes at a random point of the first interval: holders staged together do
      // not all read the primary's database at once.
      const firstIn = Math.random() * this.opts.config.recovery.dbCopyIntervalMs;
      this.held.set(kit.spec.name, { kit, stagedAt: now, db: undefined, dumping: false, lastAttemptAt: now - this.opts.config.recovery.dbCopyIntervalMs + firstIn, failures: 0 });
      this.log.info({ event: 'kit-staged', service: kit.spec.name, by: kit.stagedBy, term: kit.term }, `recovery kit of ${kit.spec.name} kept here`);
    }
    return { dbAt: this.held.get(kit.spec.name)!.db?.at };
  }

  services(): string[] {
    return [...this.held.keys()];
  }

  kit(service: string): RecoveryKit | undefined {
    return this.held.get(service)?.kit;
  }

  /** The database copy of `service` held here: its file and record. */
  dbCopy(service: string): { file: string; meta: DbCopyMeta } | undefined {
    const h = this.held.get(service);
    return h?.db ? { file: join(this.opts.dir, service, h.db.file), meta: h.db } : undefined;
  }

  /** For the heartbeat; `preparing`: the container got ready for a recovery of the service here, if any. */
  report(preparing: (service: string) => string | undefined = () => undefined): Array<{ service: string; image: string; dbAt?: number; preparing?: string }> {
    return [...this.held.values()].slice(0, 32).map((h) => {
      const p = preparing(h.kit.spec.name);
      return { service: h.kit.spec.name, image: h.kit.spec.image, ...(h.db ? { dbAt: h.db.at } : {}), ...(p ? { preparing: p } : {}) };
    });
  }

  /** Drop the kit of `service` (this depot now runs a copy of it, so the copy protects it). */
  async drop(service: string): Promise<void> {
    if (!this.held.delete(service)) return;
    await rm(join(this.opts.dir, service), { recursive: true, force: true });
    this.log.info({ event: 'kit-dropped', service }, `recovery kit of ${service} dropped (a copy runs here)`);
  }

  /** Start the database copies that are due. */
  tick(): void {
    const cfg = this.opts.config.recovery;
    if (!cfg.enabled) return;
    const now = this.now();
    for (const h of this.held.values()) {
      const spec = h.kit.spec;
      if (!spec.database || h.dumping) continue;
      // Failed copies back off (doubling, up to ten intervals) so a primary that cannot be read is not hammered.
      const wait = cfg.dbCopyIntervalMs * Math.min(10, 2 ** Math.min(h.failures, 4));
      if (now - h.lastAttemptAt < (h.failures > 0 ? wait : cfg.dbCopyIntervalMs)) continue;
      if (now - h.stagedAt > cfg.kitStaleMs) continue;
      const source = dumpSourceOf(copiesOf(this.opts.members, spec.name), this.opts.self.peerId, isGuestPacked(spec.container));
      if (!source) continue;
      h.dumping = true;
      h.lastAttemptAt = now;
      const job = this.copyDb(h, source.address, source.host).finally(() => {
        h.dumping = false;
        this.running = this.running.filter((p) => p !== job);
      });
      this.running.push(job);
    }
  }

  private async copyDb(h: Held, address: string, fromHost: string): Promise<void> {
    const spec = h.kit.spec;
    const db = spec.database!;
    const cfg = this.opts.config.recovery;
    const dir = join(this.opts.dir, spec.name);
    try {
      const password = db.passwordFile ? (await readFile(insideDir(this.opts.imageFilesDir(spec.image), db.passwordFile, 'database.passwordFile'), 'utf8')).trim() : '';
      const at = this.now();
      // Loaded at the first copy: execa and the client lookup are not needed by a depot holding no kit.
      const { dumpDatabaseGz } = await import('./db/db-copy.ts');
      const r = await dumpDatabaseGz({
        source: { host: address, port: db.port, user: db.user, password },
        database: db.database,
        timeoutMs: cfg.dbCopyTimeoutMs,
        maxBytes: cfg.dbCopyMaxBytes,
        bytesPerSec: cfg.dbCopyBytesPerSec,
        signal: this.abort.signal,
        settings: this.opts.config.dbsync,
      });
      const file = `db-${at}.sql.gz`;
      await writeFileDurable(join(dir, file), r.gz);
      const meta: DbCopyMeta = { file, at, bytes: r.gz.length, sqlBytes: r.sqlBytes, durationMs: r.durationMs, fromHost };
      await writeFileDurable(join(dir, 'db.json'), JSON.stringify(meta));
      const previous = h.db?.file;
      h.db = meta;
      h.failures = 0;
      if (previous && previous !== file) await rm(join(dir, previous), { force: true });
      this.log.info({ event: 'db-copy', service: spec.name, from: fromHost, bytes: meta.bytes, sqlBytes: meta.sqlBytes, durationMs: meta.durationMs, at }, `database copy of ${spec.name} taken from ${fromHost}`);
    } catch (err) {
      h.failures += 1;
      this.log.warn({ event: 'db-copy-failed', service: spec.name, from: fromHost, failures: h.failures, err: errorMessage(err) }, `database copy of ${spec.name} failed; the previous one is kept`);
    }
  }
}

/**
 * Where a kit holder dumps the service's database from: the alive primary's server — in its guest,
 * at the guest's own address (heartbeat guestAddress), for a VM-packed service; at its host's
 * address otherwise. None while there is no such primary, it is this depot, or its guest's address
 * is not known yet (its host runs no server of the service). Pure.
 */
export function dumpSourceOf(copies: CopyView[], selfPeerId: string, guest: boolean): { address: string; host: string } | undefined {
  const primary = copies.find((c) => c.report.role === 'primary' && c.depotState === 'alive' && dbAddressOf(c, guest));
  if (!primary || primary.peerId === selfPeerId) return undefined;
  return { address: dbAddressOf(primary, guest)!, host: primary.host };
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}
