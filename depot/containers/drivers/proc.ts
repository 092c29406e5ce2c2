import { readdirSync, readFileSync } from 'node:fs';

/** Whether a process exists and is not a zombie (a zombie still answers signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the command name in parentheses, which may itself contain spaces.
    const close = s.lastIndexOf(')');
    return s.slice(close + 2, close + 3) !== 'Z' || threadsExiting(pid);
  } catch {
    return false;
  }
}

/**
 * A multi-threaded process whose main thread has exited shows 'Z' while its other threads are
 * still exiting, and its files (a listening socket) stay open until the last one is gone. Count
 * it as alive until then, or a "stopped" container could still hold its port for a moment.
 */
function threadsExiting(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).length > 1;
  } catch {
    return false;
  }
}

/** Live (non-zombie) members of process group `pgid`, from /proc. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let s: string;
    try {
      s = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && (fields[0] !== 'Z' || threadsExiting(Number(name)))) out.push(Number(name));
  }
  return out;
}

export function groupAlive(pgid: number): boolean {
  // The common case, answered from one file: the group's leader (pid = pgid) is still running in
  // it. Only when it is gone is every process read (a scan of /proc, some ms on a busy host, and
  // it ran for every container every second on the depot's one thread).
  return leaderRunning(pgid) || groupMembers(pgid).length > 0;
}

function leaderRunning(pgid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pgid}/stat`, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // A reused pid belongs to another group; a zombie leader leaves the question to the scan.
    return fields[0] !== 'Z' && Number(fields[2]) === pgid;
  } catch {
    return false;
  }
}

/**
 * A log file's descriptor as a child's stdout/stderr. The child writes to the file directly (no
 * pipe through the depot), so it keeps running and logging when the depot exits. execa accepts
 * any descriptor at run time; its types only list a few literals.
 */
export function fileDescriptor(fd: number): never {
  return fd as never;
}
