import { readFile, readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// Every process the demo starts carries NAVIGATOR_DEMO=<demo id> (and NAVIGATOR_DEMO_HOST=<host>)
// in its environment, and every descendant inherits it: depots, the fence guards they fork,
// mariadbd, the monitor. That marker finds them all again — also processes that left their
// process group or outlived their depot — without matching anyone else's.

export const DEMO_ENV = 'NAVIGATOR_DEMO';
export const HOST_ENV = 'NAVIGATOR_DEMO_HOST';

/** Pids of processes whose environment has DEMO_ENV=id (and HOST_ENV=host when given). */
export async function markedPids(id: string, host?: string): Promise<number[]> {
  const want = [`${DEMO_ENV}=${id}`, ...(host !== undefined ? [`${HOST_ENV}=${host}`] : [])];
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    let env: string;
    try {
      env = await readFile(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone, or not ours to read
    }
    const vars = env.split('\0');
    if (want.every((w) => vars.includes(w))) out.push(pid);
  }
  return out;
}

/** SIGKILL every marked process, repeating until none is left (a dying parent may fork once more). */
export async function killMarked(id: string, host?: string): Promise<number> {
  let killed = 0;
  for (let round = 0; round < 50; round++) {
    const pids = await markedPids(id, host);
    if (pids.length === 0) return killed;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        // already gone
      }
    }
    await sleep(20);
  }
  const left = await markedPids(id, host);
  if (left.length > 0) throw new Error(`processes ${left.join(', ')} of demo ${id} survived SIGKILL`);
  return killed;
}
