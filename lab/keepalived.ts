import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { Lab, type LabProcess } from './lab.ts';
import { Prober } from './prober.ts';
import { ArpWatch } from './arp-watch.ts';

/**
 * The yardstick for bench:failover: keepalived (Debian's 2.2.7, VRRP, advert_int 1, priorities
 * 150/100) moving the same kind of service address between two lab workstations, with the
 * same echo service, prober and ARP watcher Navigator's own trials use. A trial is a power loss
 * of the master's host (link down, every process killed) while the 10 ms prober runs.
 */

export interface KeepalivedTrial {
  outageMs: number;
  recovered: boolean;
  /** Moments with two MACs answering for the address during the trial window. */
  splitBrainEvents: number;
  serverAfter: string | undefined;
}

export interface KeepalivedTrialOptions {
  logger?: Logger;
  /** Use this lab (its first two workstations) instead of creating and destroying one. */
  lab?: Lab;
  port?: number;
  /** Called after each trial (progress output). */
  onTrial?: (index: number, trial: KeepalivedTrial) => void;
  /** Give up on a trial whose service does not return within this time. */
  trialTimeoutMs?: number;
}

export interface KeepalivedResult {
  trials: KeepalivedTrial[];
  outages: number[];
}

const MASTER_PRIORITY = 150;
const BACKUP_PRIORITY = 100;

/** keepalived.conf for one host: one VRRP instance carrying the service address. */
export function keepalivedConfig(opts: { routerId: string; iface: string; vrid: number; priority: number; master: boolean; address: string; advertInt?: number }): string {
  return [
    'global_defs {',
    `  router_id ${opts.routerId}`,
    '}',
    'vrrp_instance VI_NAVLAB {',
    `  state ${opts.master ? 'MASTER' : 'BACKUP'}`,
    `  interface ${opts.iface}`,
    `  virtual_router_id ${opts.vrid}`,
    `  priority ${opts.priority}`,
    `  advert_int ${opts.advertInt ?? 1}`,
    '  virtual_ipaddress {',
    `    ${opts.address} dev ${opts.iface}`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Starts keepalived (VRRP only, foreground, own config and pid files) in a lab host. */
export async function startKeepalived(lab: Lab, host: string, opts: { address: string; priority: number; master: boolean; vrid?: number }): Promise<LabProcess> {
  const h = lab.host(host);
  const conf = join(lab.dir, `keepalived-${h.name}.conf`);
  await writeFile(conf, keepalivedConfig({ routerId: `navlab_${h.name}`, iface: h.iface, vrid: opts.vrid ?? 77, priority: opts.priority, master: opts.master, address: opts.address }));
  const pid = (kind: string): string => join(lab.dir, `keepalived-${h.name}-${kind}.pid`);
  const proc = lab.spawn(h.name, [
    'keepalived', '--dont-fork', '--log-console', '--log-detail', '--no-syslog', '--vrrp',
    '--use-file', conf, '--pid', pid('main'), '--vrrp_pid', pid('vrrp'), '--checkers_pid', pid('checkers'),
  ], { name: 'keepalived' });
  await proc.waitForLine(/Starting VRRP child process|VRRP_Instance|Opening file/, 10_000);
  return proc;
}

async function waitUntil(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`keepalived yardstick: ${what} not reached within ${timeoutMs} ms`);
}

/** Runs n power-loss trials of the keepalived master; returns each trial's outage and split-brain count. */
export async function keepalivedTrials(n: number, opts: KeepalivedTrialOptions = {}): Promise<KeepalivedResult> {
  if (!Number.isInteger(n) || n < 1) throw new Error('keepalived trials: n must be a positive integer');
  const log = (opts.logger ?? silentLogger()).child({ component: 'keepalived-yardstick' });
  const ownLab = !opts.lab;
  const lab = opts.lab ?? (await Lab.create({ workstations: 2, logger: opts.logger }));
  const port = opts.port ?? 7000;
  const [master, backup] = [lab.workstations[0]!.name, lab.workstations[1]!.name];
  const address = lab.serviceAddress(0);
  const ip = address.split('/')[0]!;
  const trials: KeepalivedTrial[] = [];
  let prober: Prober | undefined;
  let watch: ArpWatch | undefined;
  try {
    await Promise.all([lab.startEcho(master, port), lab.startEcho(backup, port)]);
    await startKeepalived(lab, backup, { address, priority: BACKUP_PRIORITY, master: false });
    await startKeepalived(lab, master, { address, priority: MASTER_PRIORITY, master: true });
    prober = await Prober.start(lab, { target: ip, port });
    watch = await ArpWatch.start(lab, { address: ip });
    for (let i = 0; i < n; i++) {
      // Steady state: the master alone holds the address and serves.
      await waitUntil(`${master} alone holding ${ip}`, async () => (await lab.holders(ip)).join() === master, 15_000);
      await prober.waitForServer(master, 15_000);
      // A power cut strikes at a random moment of the 1 s advert cycle; without this the trials
      // would all hit the same phase and report one value of a spread that is really ~1 s wide.
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
      const fault = performance.timeOrigin + performance.now();
      await lab.powerOff(master);
      await prober.waitForServer(backup, opts.trialTimeoutMs ?? 20_000);
      await new Promise((r) => setTimeout(r, 300));
      const end = performance.timeOrigin + performance.now();
      const o = prober.outage(fault, end);
      const trial: KeepalivedTrial = {
        outageMs: o.outageMs,
        recovered: o.recovered,
        splitBrainEvents: watch.splitBrainEvents({ from: fault, to: end }),
        serverAfter: o.serverAfter,
      };
      trials.push(trial);
      log.info({ event: 'keepalived-trial', trial: i + 1, ...trial }, 'keepalived trial done');
      opts.onTrial?.(i, trial);
      // Bring the master back (it preempts with the higher priority) for the next trial.
      await lab.powerOn(master);
      if (i < n - 1) {
        await lab.startEcho(master, port);
        await startKeepalived(lab, master, { address, priority: MASTER_PRIORITY, master: true });
      }
    }
  } finally {
    await prober?.stop().catch(() => undefined);
    await watch?.stop().catch(() => undefined);
    await lab.killAll(master).catch(() => undefined);
    await lab.killAll(backup).catch(() => undefined);
    if (ownLab) await lab.destroy();
  }
  return { trials, outages: trials.map((t) => t.outageMs) };
}
