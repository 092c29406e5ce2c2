import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import type { RouteTarget } from '../shared/api/routes.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import { sendError, sendJson } from './server.ts';

// Mutating HTTP endpoints (switchover, drain, bootstrap, image refresh): served only to the admin host, only
// with the admin token, and only when the request names this host in its Host header (an IP
// address, localhost, or this machine's own name): a web page whose DNS name was rebound to
// 127.0.0.1 sends its own name there and is answered 421 before anything else is looked at.

/**
 * A mutating endpoint: served only to the admin host, only with the admin token (constant-time
 * check), body checked by `schema`; 401/403/400 leave everything untouched. Shared by the
 * tracking routes (switchover, drain) and the pilots (bootstrap).
 */
export function registerAdminPost<T>(
  server: RouteTarget,
  opts: { admin: { token: string; host: string }; logger: Logger },
  path: string,
  schema: z.ZodType<T>,
  action: ((args: T) => Promise<unknown>) | undefined,
  name: string,
): void {
  const log = opts.logger.child({ component: 'tracking' });
  server.route('POST', path, async (req, res) => {
    const from = normalizeAddress(req.socket.remoteAddress ?? '');
    if (!hostHeaderAllowed(req.headers.host)) {
      log.warn({ event: 'admin-refused', action: name, from, reason: 'host-header', host: String(req.headers.host ?? '').slice(0, 100) }, 'admin request for a foreign Host (DNS rebinding?)');
      return sendError(res, 421, `${name}: Host ${JSON.stringify(String(req.headers.host ?? '').slice(0, 100))} is not this depot (use its IP address, localhost or ${hostname()})`);
    }
    if (!adminHostAllows(opts.admin.host, from)) {
      log.warn({ event: 'admin-refused', action: name, from, reason: 'host' }, 'admin request from a host that is not the admin host');
      return sendError(res, 403, `${name} is only served to ${opts.admin.host}`);
    }
    if (!opts.admin.token) return sendError(res, 403, `${name} is disabled: no admin token configured (http.adminToken)`);
    if (!tokenMatches(req.headers.authorization, opts.admin.token)) {
      log.warn({ event: 'admin-refused', action: name, from, reason: 'token' }, 'admin request with a missing or wrong token');
      res.setHeader('www-authenticate', 'Bearer realm="navigator"');
      return sendError(res, 401, 'missing or wrong admin token');
    }
    let body: unknown;
    try {
      body = await readJson(req, 16_384);
    } catch (err) {
      return sendError(res, 400, errorMessage(err));
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) return sendError(res, 400, issueText(parsed.error));
    if (!action) return sendError(res, 503, `${name} is not available on this depot`);
    log.info({ event: `admin-${name}`, from, ...(parsed.data as object) }, `admin ${name} requested`);
    try {
      const result = await action(parsed.data);
      sendJson(res, 200, { ok: true, result: result ?? null });
    } catch (err) {
      const status = isNavigatorError(err, 'BAD_REQUEST') ? 400 : isNavigatorError(err, 'NOT_FOUND') ? 404 : isNavigatorError(err, 'CONFLICT') ? 409 : 500;
      log.warn({ event: `admin-${name}-failed`, err: errorMessage(err) }, `admin ${name} failed`);
      sendError(res, status, errorMessage(err));
    }
  });
}

/** Constant-time comparison of a `Bearer TOKEN` header against the configured token. */
export function tokenMatches(header: string | undefined, token: string): boolean {
  if (!token) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  const given = m?.[1] ?? '';
  // Hash both so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && given.length > 0;
}

/**
 * The Host header names this machine: an IP literal, localhost, or the host's own name (with or
 * without a domain, any port). Anything else is another site's name pointed at us (DNS rebinding).
 */
export function hostHeaderAllowed(header: string | undefined, ownNames: readonly string[] = [hostname()]): boolean {
  if (!header) return false;
  const h = header.trim().toLowerCase();
  const bare = h.startsWith('[') ? h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined) : h.replace(/:\d+$/, '');
  if (isIP(bare) !== 0) return true;
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true;
  return ownNames.some((n) => {
    const own = n.toLowerCase();
    // Exactly the name, or its short form; never "<name>.<any domain>", which anyone can register.
    return bare === own || own.startsWith(`${bare}.`);
  });
}

function normalizeAddress(addr: string): string {
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** adminHost: an IP, `localhost` (any loopback), or `*` / 0.0.0.0 / :: for any client. */
export function adminHostAllows(adminHost: string, remote: string): boolean {
  const want = adminHost.trim();
  if (want === '*' || want === '0.0.0.0' || want === '::') return true;
  const from = normalizeAddress(remote);
  if (want === 'localhost') return from === '::1' || from.startsWith('127.');
  return normalizeAddress(want) === from;
}

export function issueText(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
}

async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new NavigatorError('BAD_REQUEST', `request body larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new NavigatorError('BAD_REQUEST', 'request body is not valid JSON');
  }
}

