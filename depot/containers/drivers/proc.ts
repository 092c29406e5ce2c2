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
  return groupMembers(pgid).length > 0;
}

/**
 * A log file's descriptor as a child's stdout/stderr. The child writes to the file directly (no
 * pipe through the depot), so it keeps running and logging when the depot exits. execa accepts
 * any descriptor at run time; its types only list a few literals.
 */
export function fileDescriptor(fd: number): never {
  return fd as never;
}
