import { createHash } from 'node:crypto';
import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';

// The manifest of a stored image: what files it holds, their sizes, modes, SHA-256 and the
// SHA-256 of every block. The image's id is the SHA-256 of the manifest in canonical JSON, so an
// id names exactly one content and anything received can be checked block by block (hashing the
// files themselves: file-checks.ts).

const MIN_BLOCK_SIZE = 64 * 1024;
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;

const Hex256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (SHA-256)');

/** Content id of an image: SHA-256 of its canonical manifest. */
export const ImageId = Hex256.describe('Image id: SHA-256 of the canonical manifest JSON');

/** Why a relative path inside an image is unsafe, or undefined when it is fine. */
export function unsafePathReason(p: string): string | undefined {
  if (p.length === 0) return 'is empty';
  if (p.length > 4096) return 'is longer than 4096 characters';
  if (p.includes('\0')) return 'contains a NUL character';
  if (p.includes('\\')) return 'contains a backslash';
  if (p.startsWith('/')) return 'is absolute';
  const parts = p.split('/');
  for (const part of parts) {
    if (part === '') return 'has an empty segment (// or trailing /)';
    if (part === '..') return "contains '..'";
    if (part === '.') return "contains '.'";
  }
  return undefined;
}

export const RelativePath = z
  .string()
  .superRefine((p, ctx) => {
    const why = unsafePathReason(p);
    if (why) ctx.addIssue({ code: 'custom', message: `path ${JSON.stringify(p.slice(0, 200))} ${why}` });
  })
  .describe("Path of a file inside the image: relative, '/'-separated, no '..', '.', NUL or empty segments");

export const ManifestFile = z
  .object({
    path: RelativePath,
    size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).describe('Size in bytes'),
    mode: z.number().int().min(0).max(0o7777).describe('Permission bits (as in stat st_mode & 0o7777)'),
    sha256: Hex256.describe('SHA-256 of the whole file'),
    blocks: z.array(Hex256).describe('SHA-256 of each block of blockSize bytes (last one may be shorter)'),
  })
  .strict();
export type ManifestFile = z.infer<typeof ManifestFile>;

export const ImageManifest = z
  .object({
    format: z.literal(1).describe('Manifest format version'),
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'letters, digits, . _ - (1-128, starting with a letter or digit)')
      .describe('Image name; versions of the same name are kept together (keepVersions)'),
    version: z.string().min(1).max(128).describe('Version label, free text (default: creation time)'),
    created: z.iso.datetime().describe('Creation time (ISO 8601, UTC)'),
    blockSize: z.number().int().min(MIN_BLOCK_SIZE).max(MAX_BLOCK_SIZE).describe('Block size of the block hashes in bytes'),
    files: z.array(ManifestFile).max(100_000).describe('Files of the image, sorted by path'),
  })
  .strict()
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    for (const [i, f] of m.files.entries()) {
      const want = f.size === 0 ? 0 : Math.ceil(f.size / m.blockSize);
      if (f.blocks.length !== want) {
        ctx.addIssue({ code: 'custom', path: ['files', i, 'blocks'], message: `${f.path}: ${f.blocks.length} block hashes for ${f.size} bytes, expected ${want}` });
      }
      if (seen.has(f.path)) ctx.addIssue({ code: 'custom', path: ['files', i, 'path'], message: `duplicate path ${f.path}` });
      seen.add(f.path);
    }
    // A file may not also be a folder of another file ("a" and "a/b").
    for (const p of seen) {
      const parts = p.split('/');
      for (let k = 1; k < parts.length; k++) {
        const dir = parts.slice(0, k).join('/');
        if (seen.has(dir)) ctx.addIssue({ code: 'custom', path: ['files'], message: `${dir} is both a file and a folder` });
      }
    }
  });
export type ImageManifest = z.infer<typeof ImageManifest>;

/** JSON with object keys sorted at every level: the same manifest always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export function manifestId(m: ImageManifest): string {
  return createHash('sha256').update(canonicalJson(m)).digest('hex');
}

/** Validate an untrusted manifest; a clear error lists what is wrong. */
export function parseManifest(input: unknown, source = 'manifest'): ImageManifest {
  const r = ImageManifest.safeParse(input);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`);
    throw new NavigatorError('BAD_REQUEST', `invalid image ${source}: ${issues.slice(0, 5).join('; ')}`, { issues: issues.slice(0, 20) });
  }
  const m = r.data;
  return { ...m, files: [...m.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)) };
}

export function totalBytes(m: ImageManifest): number {
  return m.files.reduce((s, f) => s + f.size, 0);
}

export function blockLength(m: ImageManifest, f: ManifestFile, index: number): number {
  return Math.min(m.blockSize, f.size - index * m.blockSize);
}

/** Bytes of the given blocks of the image's files (paths not in the manifest count nothing). */
export function blocksBytes(m: ImageManifest, items: ReadonlyArray<{ path: string; blocks: readonly number[] }>): number {
  const byPath = new Map(m.files.map((f) => [f.path, f]));
  let n = 0;
  for (const it of items) {
    const f = byPath.get(it.path);
    if (f) for (const i of it.blocks) n += blockLength(m, f, i);
  }
  return n;
}
