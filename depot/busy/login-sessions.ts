import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

// Active local login sessions of the host, as systemd-logind knows them: a graphical or text
// console session that is active means someone sits at the PC. Remote (ssh) sessions, greeters
// and closing sessions do not count. Read from logind's session records in /run/systemd/sessions
// — what `loginctl list-sessions` / `show-session` report and what libsystemd's sd-login API
// itself reads — rather than by running loginctl every sample: an idle depot starts no process
// and loads no process library for it (test/integration/depot-footprint.test.ts). Where logind
// does not run (no systemd, a container) the folder is absent and `available` says so.

export const LOGIND_SESSIONS_DIR = '/run/systemd/sessions';

export interface SessionProperties {
  Type?: string;
  Remote?: string;
  Active?: string;
  State?: string;
  Class?: string;
}

const LOCAL_TYPES = new Set(['x11', 'wayland', 'mir', 'tty']);

/** Pure: a logind session record (KEY=value lines) as the properties `loginctl show-session` names. */
export function parseSessionRecord(text: string): SessionProperties {
  const kv: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && !line.startsWith('#')) kv[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  const yesNo = (v: string | undefined) => (v === undefined ? undefined : v === '1' ? 'yes' : 'no');
  const out: SessionProperties = {};
  if (kv.TYPE !== undefined) out.Type = kv.TYPE;
  const remote = yesNo(kv.REMOTE);
  if (remote !== undefined) out.Remote = remote;
  const active = yesNo(kv.ACTIVE);
  if (active !== undefined) out.Active = active;
  if (kv.STATE !== undefined) out.State = kv.STATE;
  if (kv.CLASS !== undefined) out.Class = kv.CLASS;
  return out;
}

/** Pure: a session someone is at: local, of a user, active, on a display or console. */
export function isActiveLocal(p: SessionProperties): boolean {
  return p.Remote === 'no' && p.Active === 'yes' && p.Class !== 'greeter' && p.State !== 'closing' && LOCAL_TYPES.has(p.Type ?? '');
}

export interface SessionCount {
  available: boolean;
  active: number;
  /** Why the count is not available. */
  error?: string;
}

/** Count the host's active local sessions from logind's records. */
export async function activeLocalSessions(dir = LOGIND_SESSIONS_DIR): Promise<SessionCount> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { available: false, active: 0, error: code === 'ENOENT' ? `systemd-logind is not running (no ${dir})` : `cannot read ${dir}: ${code ?? String(err)}` };
  }
  let active = 0;
  // Session ids are names like "2" or "c1"; "*.ref" files are logind's own references.
  for (const name of names.filter((n) => /^[A-Za-z0-9_-]{1,64}$/.test(n))) {
    const text = await readFile(join(dir, name), 'utf8').catch(() => '');
    if (isActiveLocal(parseSessionRecord(text))) active += 1;
  }
  return { available: true, active };
}
