import { execa } from 'execa';

// Active local login sessions of the host, from systemd-logind (`loginctl`): a graphical or text
// console session that is active means someone sits at the PC. Remote (ssh) sessions and those
// of system accounts' managers do not count. Where loginctl is absent or logind does not answer
// (no systemd, a container), the host has no countable sessions and `available` says so.

export interface SessionProperties {
  Type?: string;
  Remote?: string;
  Active?: string;
  State?: string;
  Class?: string;
}

const LOCAL_TYPES = new Set(['x11', 'wayland', 'mir', 'tty']);

/** Pure: session ids from `loginctl list-sessions --no-legend` (first column). */
export function parseSessionIds(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((id) => /^[A-Za-z0-9_-]{1,64}$/.test(id));
}

/** Pure: `loginctl show-session ID -p …` output (Key=value lines). */
export function parseSessionProperties(text: string): SessionProperties {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out as SessionProperties;
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

/** Count the host's active local sessions through loginctl (each command with a 3 s timeout). */
export async function activeLocalSessions(loginctl = 'loginctl'): Promise<SessionCount> {
  const list = await execa(loginctl, ['list-sessions', '--no-legend', '--no-pager'], { reject: false, timeout: 3000, stdin: 'ignore' }).catch((err: unknown) => ({ exitCode: -1, stdout: '', stderr: String(err) }));
  if (list.exitCode !== 0) return { available: false, active: 0, error: String(list.stderr).trim().split('\n')[0] || `exit ${list.exitCode}` };
  let active = 0;
  for (const id of parseSessionIds(String(list.stdout))) {
    const r = await execa(loginctl, ['show-session', id, '-p', 'Type', '-p', 'Remote', '-p', 'Active', '-p', 'State', '-p', 'Class'], { reject: false, timeout: 3000, stdin: 'ignore' });
    if (r.exitCode === 0 && isActiveLocal(parseSessionProperties(String(r.stdout)))) active += 1;
  }
  return { available: true, active };
}
