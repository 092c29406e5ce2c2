import { execa } from 'execa';
import { NavigatorError } from '../../shared/errors.ts';

// The iproute2 commands a namespace LAN is made of and taken apart with: run one and fail naming
// it; list, empty and delete namespaces; delete a root-namespace link.

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `file args` (15 s at most) and throws naming the command and its stderr unless it exits 0. */
export async function run(file: string, args: readonly string[]): Promise<ExecResult> {
  const r = await execa(file, args, { reject: false, timeout: 15_000 });
  if (r.exitCode !== 0) {
    throw new NavigatorError('COMMAND_FAILED', `${file} ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${r.stderr.trim() || '(no stderr)'}`, {
      command: [file, ...args],
      stderr: r.stderr,
    });
  }
  return { exitCode: 0, stdout: r.stdout, stderr: r.stderr };
}

/** Names of every network namespace on this machine. */
export async function listNamespaces(): Promise<string[]> {
  const list = await execa('ip', ['-j', 'netns', 'list'], { reject: false });
  return list.exitCode === 0 && list.stdout.trim() ? (JSON.parse(list.stdout) as Array<{ name: string }>).map((x) => x.name) : [];
}

/** Pids of the processes inside a namespace (not this process); none when it does not exist. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await execa('ip', ['netns', 'pids', ns], { reject: false });
  if (r.exitCode !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
}

/** Signals every process in a namespace; with SIGKILL, until none is left. Returns how many were signalled. */
export async function killNamespace(ns: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number> {
  let killed = 0;
  // Repeat: a dying supervisor may fork once more before it goes.
  for (let round = 0; round < 20; round++) {
    const pids = await namespacePids(ns);
    if (pids.length === 0) return killed;
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
        killed++;
      } catch {
        // already gone
      }
    }
    if (signal !== 'SIGKILL') return killed;
    await new Promise((r) => setTimeout(r, 20));
  }
  const left = await namespacePids(ns);
  if (left.length > 0) throw new NavigatorError('INTERNAL', `processes ${left.join(',')} in ${ns} survived SIGKILL`);
  return killed;
}

/** Kills what runs inside a namespace (or the delete would leave it running), then deletes it; gone already is fine. */
export async function removeNamespace(ns: string): Promise<void> {
  const exists = await execa('ip', ['netns', 'pids', ns], { reject: false });
  if (exists.exitCode !== 0) return;
  await killNamespace(ns, 'SIGKILL');
  const r = await execa('ip', ['netns', 'del', ns], { reject: false });
  if (r.exitCode !== 0 && !/No such file/i.test(r.stderr)) throw new NavigatorError('COMMAND_FAILED', `ip netns del ${ns} failed: ${r.stderr.trim()}`);
}

/** Deletes a link of the root namespace (a veth takes its peer with it); gone already is fine. */
export async function removeRootLink(link: string): Promise<void> {
  const r = await execa('ip', ['link', 'del', link], { reject: false });
  if (r.exitCode !== 0 && !/Cannot find device/i.test(r.stderr)) throw new NavigatorError('COMMAND_FAILED', `ip link del ${link} failed: ${r.stderr.trim()}`);
}
