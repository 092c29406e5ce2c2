import type { PeerId } from '@libp2p/interface';
import { resolve } from 'node:path';
import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';
import { ImageId, ImageManifest, RelativePath } from './manifest.ts';
import type { ImageStore } from './catalog.ts';
import type { PrepareResult } from './receive.ts';
import type { CommitResult } from './receive-commit.ts';
import type { ShipTarget } from './ship-target.ts';
import type { ControlOrigin } from '../control/server.ts';
import type { ControlAuthorizer } from '../control/guard.ts';

// The control methods of an image transfer, both ends. The receiving depot serves
// `image.prepare` (make a staging folder, say which blocks to send), `image.commit` (verify every
// received block, rename atomically) and `image.abort` (drop the staging folder); the sender's
// ShipTarget (controlShipTarget) calls them over /navigator/control/1 while it writes the file
// data over SFTP. Params are checked on the receiver, results on the sender: neither trusts the
// other's JSON.

export const ImagePrepareParams = z
  .object({
    manifest: ImageManifest.describe('Manifest of the image to receive; its id is the hash of this manifest'),
    baseId: ImageId.optional().describe('Stored version to build from (delta); default: the newest stored version of the same name'),
  })
  .strict();

export const ImageIdParams = z.object({ image: ImageId.describe('Content id of the image (64 hex digits)') }).strict();

const MissingBlocksSchema = z.object({
  path: RelativePath,
  size: z.number().int().min(0),
  blocks: z.array(z.number().int().min(0)),
});

/** image.prepare's result as the sender checks it (receive.ts PrepareResult). */
export const PrepareResultSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('present'), id: ImageId }),
  z.object({
    state: z.literal('staging'),
    id: ImageId,
    filesDir: z.string().min(2).max(4096).startsWith('/', 'must be an absolute path on the target'),
    baseId: ImageId.optional(),
    resumed: z.boolean(),
    missing: z.array(MissingBlocksSchema),
    missingBytes: z.number().int().min(0),
    totalBytes: z.number().int().min(0),
  }),
]);

const BadItemSchema = z.object({ path: z.string().max(4096), block: z.number().int().min(0).optional(), reason: z.string().max(1024) });

/** image.commit's result as the sender checks it. */
export const CommitResultSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), id: ImageId, verifiedBytes: z.number().int().min(0) }),
  z.object({ ok: z.literal(false), id: ImageId, bad: z.array(BadItemSchema) }),
]);

/** Where the control server takes extra methods (depot/control.ts ControlServer fits). */
export interface MethodRegistry {
  register(method: string, handler: (params: unknown, caller: ControlOrigin) => Promise<unknown>): void;
}

/**
 * A folder of this host as an account chrooted into `chroot` sees it ('' = not chrooted: as is).
 * The sender writes through sshd, so image.prepare must name the folder as the sender sees it.
 */
export function pathInChroot(path: string, chroot: string): string {
  if (!chroot) return path;
  const root = resolve(chroot);
  if (path === root) return '/';
  if (!path.startsWith(`${root}/`)) throw new NavigatorError('PATH_OUTSIDE_STORE', `staging folder ${path} is outside the receive account's chroot ${root} (ship.receiveChroot)`);
  return path.slice(root.length);
}

/**
 * Serve image.prepare / image.commit / image.abort from this depot's store. `receiveChroot`
 * (config ship.receiveChroot): the folder sshd chroots the receive account into.
 *
 * Only the depot holding the lease of the service the image is named after (its primary, which
 * ships standby images) may prepare a receive, and only the depot that prepared a receive may
 * commit or abort it (a depot restart forgets who did: the sender prepares again).
 */
export function registerImageControl(
  control: MethodRegistry,
  store: Pick<ImageStore, 'prepareReceive' | 'commitStaged' | 'abortStaged'>,
  opts: { receiveChroot?: string; guard: ControlAuthorizer },
): void {
  const chroot = opts.receiveChroot ?? '';
  const { guard } = opts;
  /** Who prepared each receive: image id -> { peer, service }. */
  const preparedBy = new Map<string, { peer: string; service: string }>();
  const requireSender = async (caller: ControlOrigin, method: string, image: string) => {
    if (caller.kind === 'local') return;
    const by = preparedBy.get(image);
    if (!by || by.peer !== caller.peer) throw guard.refuse(caller.peer, method, `${method} of image ${image.slice(0, 16)} is served only to the depot that prepared its receive`);
    await guard.requireHolder(caller, method, by.service);
  };
  control.register('image.prepare', async (params, caller) => {
    const p = checkParams('image.prepare', ImagePrepareParams, params);
    await guard.requireHolder(caller, 'image.prepare', p.manifest.name);
    const prep = await store.prepareReceive(p.manifest, p.baseId ? { baseId: p.baseId } : {});
    if (caller.kind === 'peer' && prep.state === 'staging') {
      preparedBy.set(prep.id, { peer: caller.peer, service: p.manifest.name });
      if (preparedBy.size > 256) preparedBy.delete(preparedBy.keys().next().value!);
    }
    return prep.state === 'staging' ? { ...prep, filesDir: pathInChroot(prep.filesDir, chroot) } : prep;
  });
  control.register('image.commit', async (params, caller) => {
    const { image } = checkParams('image.commit', ImageIdParams, params);
    await requireSender(caller, 'image.commit', image);
    const r = await store.commitStaged(image);
    if (r.ok) preparedBy.delete(image);
    return r;
  });
  control.register('image.abort', async (params, caller) => {
    const { image } = checkParams('image.abort', ImageIdParams, params);
    await requireSender(caller, 'image.abort', image);
    await store.abortStaged(image);
    preparedBy.delete(image);
    return { ok: true };
  });
}

/** What controlShipTarget needs of a control client (depot/control.ts ControlClient fits). */
export interface ControlCaller {
  call<T = unknown>(peer: PeerId, method: string, params: unknown, opts?: { timeoutMs?: number }): Promise<T>;
}

/**
 * The receiving depot as a ShipTarget: its sshd at host:port for the data, its control methods
 * for prepare/commit/abort. Prepare (hashing a cut-off staging folder) and commit (hashing the
 * whole image) take time on large images, hence the long default timeout.
 */
export function controlShipTarget(client: ControlCaller, peer: PeerId, host: string, port: number, opts: { timeoutMs?: number } = {}): ShipTarget {
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const where = `${peer.toString()} (${host})`;
  return {
    host,
    port,
    prepare: async (manifest) => checkResult(where, 'image.prepare', PrepareResultSchema, await client.call(peer, 'image.prepare', { manifest }, { timeoutMs })) as PrepareResult,
    commit: async (id) => checkResult(where, 'image.commit', CommitResultSchema, await client.call(peer, 'image.commit', { image: id }, { timeoutMs })) as CommitResult,
    abort: async (id) => {
      await client.call(peer, 'image.abort', { image: id }, { timeoutMs: 60_000 });
    },
  };
}

function checkParams<T>(method: string, schema: z.ZodType<T>, params: unknown): T {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  const where = first?.path.join('.') || '(params)';
  // A file path that leaves the image (../, absolute) is an attack on the store, not a typo.
  const escapes = first?.path[0] === 'manifest' && first.path.at(-1) === 'path';
  throw new NavigatorError(escapes ? 'PATH_OUTSIDE_STORE' : 'BAD_REQUEST', `${method}: ${where}: ${first?.message ?? 'invalid params'}`);
}

function checkResult<T>(where: string, method: string, schema: z.ZodType<T>, result: unknown): T {
  const r = schema.safeParse(result);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new NavigatorError('MESSAGE_INVALID', `${method} on ${where} answered an invalid result: ${first ? `${first.path.join('.') || '(result)'}: ${first.message}` : 'invalid'}`);
}
