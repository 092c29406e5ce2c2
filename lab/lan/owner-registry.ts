import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// What a running LAN has made, written down before it makes it: one `<id>.json` per LAN in a
// registry folder, naming its owner process. When the owner dies without cleaning up (SIGKILL,
// a crash, a closed terminal), the next run finds a record whose owner is gone and removes what
// it lists; records of live owners are left alone, so parallel runs never sweep each other.

export interface OwnerRecord {
  pid: number;
  /** The owner's start time (from /proc), so a reused pid is not mistaken for the owner. */
  startTime: string;
  dir: string;
  namespaces: string[];
}

export class OwnerRegistry<R extends OwnerRecord> {
  /** `mode`: the folder's permissions when it is created (default: the umask's). */
  constructor(
    readonly dir: string,
    private readonly mode?: number,
  ) {}

  /** Writes the record atomically (a reader never sees half of it). */
  async write(id: string, rec: R): Promise<void> {
    await mkdir(this.dir, { recursive: true, ...(this.mode !== undefined ? { mode: this.mode } : {}) });
    const file = join(this.dir, `${id}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(rec));
    await rename(`${file}.tmp`, file);
  }

  async remove(id: string): Promise<void> {
    await rm(join(this.dir, `${id}.json`), { force: true });
  }

  /** Every record by id; undefined for one that cannot be read. Empty when there is no registry yet. */
  async records(): Promise<Map<string, R | undefined>> {
    const out = new Map<string, R | undefined>();
    let files: string[];
    try {
      files = await readdir(this.dir);
    } catch {
      return out;
    }
    for (const f of files.filter((x) => x.endsWith('.json'))) {
      const id = f.slice(0, -5);
      try {
        out.set(id, JSON.parse(await readFile(join(this.dir, f), 'utf8')) as R);
      } catch {
        out.set(id, undefined);
      }
    }
    return out;
  }
}

/** The start time of a process (field 22 of /proc/PID/stat), '' when it is gone. */
async function procStartTime(pid: number): Promise<string> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name in field 2 may hold spaces, so count after ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** Whether the record's owner process still runs (same pid and start time). */
export async function ownerAlive(rec: OwnerRecord | undefined): Promise<boolean> {
  if (!rec) return false;
  const st = await procStartTime(rec.pid);
  return st !== '' && st === rec.startTime;
}

/** The owner fields of a record made by this process. */
export async function thisOwner(): Promise<Pick<OwnerRecord, 'pid' | 'startTime'>> {
  return { pid: process.pid, startTime: await procStartTime(process.pid) };
}
