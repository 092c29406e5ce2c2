import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { NavigatorError } from '../../shared/errors.ts';
import { run } from './namespaces.ts';

// Loss and delay on a link of the LAN, applied at both ends of a veth (so in both directions).
// Uses tc netem where the kernel has it; kernels without netem (CONFIG_NET_SCH_NETEM off, as on
// these CI machines) still get loss: a classic-BPF classifier drawing a random number per packet
// and a mirred redirect of the losers into an interface that is down. Delay has no such fallback.

export interface NetemOptions {
  /** Packet loss in percent, applied in each direction. */
  lossPct?: number;
  /** Delay in ms added in each direction (round trip grows by twice this). */
  delayMs?: number;
  jitterMs?: number;
}

/** One end of a link: a device in a namespace. */
export type LinkEnd = readonly [ns: string, dev: string];

/** Shapes both ends of a link (what was there before is cleared first). */
export async function shapeLink(ends: readonly LinkEnd[], opts: NetemOptions): Promise<void> {
  const args: string[] = [];
  if (opts.delayMs !== undefined) {
    if (!(opts.delayMs >= 0)) throw new NavigatorError('BAD_REQUEST', 'netem delayMs must be ≥ 0');
    args.push('delay', `${opts.delayMs}ms`);
    if (opts.jitterMs) args.push(`${opts.jitterMs}ms`);
  }
  if (opts.lossPct !== undefined) {
    if (!(opts.lossPct >= 0 && opts.lossPct <= 100)) throw new NavigatorError('BAD_REQUEST', 'netem lossPct must be 0..100');
    args.push('loss', `${opts.lossPct}%`);
  }
  if (args.length === 0) throw new NavigatorError('BAD_REQUEST', 'netem needs lossPct and/or delayMs');
  await clearLink(ends);
  if (await netemSupported()) {
    for (const [ns, dev] of ends) await run('tc', ['-n', ns, 'qdisc', 'replace', 'dev', dev, 'root', 'netem', ...args]);
    return;
  }
  if (opts.delayMs) throw new NavigatorError('BAD_REQUEST', 'netem delay needs the kernel\'s netem qdisc (CONFIG_NET_SCH_NETEM), which this kernel lacks; only lossPct works here');
  if (!opts.lossPct) return;
  // Drop when a per-packet random u32 exceeds the threshold: P(drop) = lossPct / 100.
  const threshold = Math.max(0, Math.min(0xffffffff, Math.floor((1 - opts.lossPct / 100) * 2 ** 32) - 1));
  const bytecode = `4,32 0 0 ${0xfffff000 + 56},37 0 1 ${threshold},6 0 0 4294967295,6 0 0 0`;
  for (const [ns, dev] of ends) {
    const sink = sinkName(dev);
    await run('ip', ['-n', ns, 'link', 'add', sink, 'type', 'veth', 'peer', 'name', `${sink.slice(0, 13)}-p`]);
    await run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'clsact']);
    await run('tc', ['-n', ns, 'filter', 'add', 'dev', dev, 'egress', 'bpf', 'bytecode', bytecode, 'action', 'mirred', 'egress', 'redirect', 'dev', sink]);
  }
}

/** Removes any shaping from both ends of a link (nothing there is fine). */
export async function clearLink(ends: readonly LinkEnd[]): Promise<void> {
  for (const [ns, dev] of ends) {
    for (const kind of ['root', 'clsact']) {
      const r = await execa('tc', ['-n', ns, 'qdisc', 'del', 'dev', dev, kind], { reject: false });
      // "nothing to delete" is the normal state without shaping.
      if (r.exitCode !== 0 && !/Cannot delete qdisc with handle of zero|No such file|Invalid handle|Cannot find specified qdisc/i.test(r.stderr)) {
        throw new NavigatorError('COMMAND_FAILED', `tc -n ${ns} qdisc del dev ${dev} ${kind} failed: ${r.stderr.trim()}`);
      }
    }
    await execa('ip', ['-n', ns, 'link', 'del', sinkName(dev)], { reject: false });
  }
}

/** The down interface that swallows the dropped packets of `dev` (names are 15 characters at most). */
function sinkName(dev: string): string {
  return `bh-${dev}`.slice(0, 15);
}

/** Prefix of the scratch namespace the netem check makes; a sweep removes those of dead processes. */
export const NETEM_PROBE_PREFIX = 'navlabprobe-';

let netemCache: Promise<boolean> | undefined;

/** Whether the kernel has the netem qdisc (checked once, on lo of a scratch namespace). */
function netemSupported(): Promise<boolean> {
  netemCache ??= (async () => {
    const ns = `${NETEM_PROBE_PREFIX}${process.pid}-${randomBytes(2).toString('hex')}`;
    await execa('ip', ['netns', 'add', ns]);
    try {
      const r = await execa('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], { reject: false });
      return r.exitCode === 0;
    } finally {
      await execa('ip', ['netns', 'del', ns], { reject: false });
    }
  })();
  return netemCache;
}
