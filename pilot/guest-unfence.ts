import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import { QmpClient } from '../depot/containers/drivers/qmp.ts';

/**
 * Bringing a fenced guest back as a standby. The fence guard fences a guest by pausing it (QMP
 * `stop`) and unplugging its NIC (`set_link off`): the guest still holds the service address and
 * may still run the primary-only unit, frozen. Resuming it as it is would put a second MAC on the
 * address. So, with its NIC unplugged all along: resume it (`cont`), stop the primary-only unit
 * and delete the address through the guest agent, check the address is gone, and only then plug
 * the NIC in again: the guest rejoins the LAN as a warm standby (its database is then re-pointed
 * or reseeded by the current primary, like any ex-primary's). If the guest cannot be cleaned
 * (its agent does not answer, the address stays), it is replaced instead: QEMU is stopped and the
 * copy booted again from its disk, which never holds the address at boot (it is added at run
 * time only) and does not start the primary-only unit. Either way the guest is never on the LAN
 * holding the address without a lease.
 */

/**
 * What to do with the guest, from QEMU's run state (`query-status`; undefined: no QEMU runs):
 *   absent  nothing (the pilot's start boots the copy cold)
 *   leave   QEMU is still starting: nothing to undo
 *   resume  paused (the guard's fence): NIC off, cont, clean, check, NIC on; else replace
 *   check   running (a guest the guard did not fence: its pilot released the address): delete
 *           the address, check, NIC on — best effort, it may still be booting (no agent yet)
 *   replace internal-error, io-error, guest-panicked, shutdown, suspended …: nothing to resume safely
 */
export type UnfencePlan = 'absent' | 'leave' | 'resume' | 'check' | 'replace';

/** Pure. */
export function unfencePlan(runState: string | undefined): UnfencePlan {
  if (runState === undefined) return 'absent';
  if (runState === 'paused') return 'resume';
  if (runState === 'running') return 'check';
  if (runState === 'prelaunch' || runState === 'inmigrate') return 'leave';
  return 'replace';
}

/** The steps, each acting on the real guest (built by qemuUnfenceSteps) or a test's fake. */
export interface UnfenceSteps {
  /** QMP run state; undefined when no QEMU runs for the copy. */
  runState(): Promise<string | undefined>;
  setLink(up: boolean): Promise<void>;
  /** QMP `cont`. */
  resume(): Promise<void>;
  /** Stop the primary-only unit in the guest (guest agent). */
  stopPrimaryUnit(): Promise<void>;
  /** Delete the service address in the guest (guest agent; already gone is fine). */
  releaseAddress(): Promise<void>;
  /** Does the guest still hold the address (guest agent)? */
  addressHeld(): Promise<boolean>;
  /** Stop QEMU and boot the copy again from its disk, as a standby. */
  replace(): Promise<void>;
}

export type UnfenceOutcome =
  | { kind: 'absent' | 'left' }
  | { kind: 'clean'; resumed: boolean; durationMs: number }
  | { kind: 'unchecked'; reason: string }
  | { kind: 'replaced'; reason: string; durationMs: number };

export interface UnfenceOptions {
  steps: UnfenceSteps;
  logger: Logger;
  /** How long a just-resumed guest's agent may take to do the cleaning (TCG: seconds per round trip). */
  cleanTimeoutMs?: number;
  /**
   * The guest is suspect (its pilot could not drop the address through the agent): a running
   * guest that cannot be checked is unplugged and replaced instead of left as it is.
   */
  suspect?: boolean;
  /** Pause between attempts while the agent does not answer yet. */
  retryMs?: number;
  now?: () => number;
}

/** Resume-and-clean, or replace, a guest that may have been fenced; see the comment at the top. */
export async function unfenceGuest(o: UnfenceOptions): Promise<UnfenceOutcome> {
  const now = o.now ?? (() => performance.now());
  const t0 = now();
  const s = o.steps;
  const log = o.logger;
  const state = await s.runState();
  const plan = unfencePlan(state);
  if (plan === 'absent') return { kind: 'absent' };
  if (plan === 'leave') return { kind: 'left' };
  const replace = async (reason: string): Promise<UnfenceOutcome> => {
    log.warn({ event: 'guest-replace', runState: state, reason }, `guest cannot be brought back clean (${reason}): stopping it and booting it again as a standby`);
    await s.replace();
    const durationMs = Math.round(now() - t0);
    log.info({ event: 'guest-replaced', durationMs }, 'guest booted again from its disk as a standby');
    return { kind: 'replaced', reason, durationMs };
  };
  if (plan === 'replace') return replace(`QEMU run state ${state}`);
  if (plan === 'check') {
    // Not fenced, so its NIC was never unplugged by us; plugged in again only if the address is
    // verified gone (a crash between a resume and its plug-in left it unplugged).
    try {
      await s.releaseAddress();
      if (await s.addressHeld()) throw new NavigatorError('CONFLICT', 'the service address is still on the guest after ip addr del');
    } catch (err) {
      const reason = errorMessage(err);
      if (o.suspect) {
        await s.setLink(false);
        return replace(`running guest not checked: ${reason}`);
      }
      log.warn({ event: 'guest-check-failed', err: reason }, 'could not check the running guest holds no address; its NIC is left as it is');
      return { kind: 'unchecked', reason };
    }
    await s.setLink(true);
    const durationMs = Math.round(now() - t0);
    log.info({ event: 'guest-checked', durationMs }, 'running guest holds no service address; NIC plugged in');
    return { kind: 'clean', resumed: false, durationMs };
  }
  // Fenced: stays off the LAN (again: the guard's fence already unplugged it) while it runs
  // before the cleaning, so nothing the guest still holds is seen.
  await s.setLink(false);
  const resumed = true;
  await s.resume();
  const deadline = now() + (o.cleanTimeoutMs ?? 120_000);
  let last = '';
  for (;;) {
    try {
      await s.stopPrimaryUnit();
      await s.releaseAddress();
      if (await s.addressHeld()) throw new NavigatorError('CONFLICT', 'the service address is still on the guest after ip addr del');
      break;
    } catch (err) {
      last = errorMessage(err);
      if (now() >= deadline) return replace(`not cleaned within ${o.cleanTimeoutMs ?? 120_000} ms: ${last}`);
      log.info({ event: 'guest-clean-retry', err: last }, 'guest not cleaned yet; retrying');
      await new Promise((r) => setTimeout(r, o.retryMs ?? 2000));
    }
  }
  await s.setLink(true);
  const durationMs = Math.round(now() - t0);
  log.info({ event: 'guest-unfenced', runState: state, resumed, durationMs }, 'fenced guest resumed without the address and back on the LAN as a standby');
  return { kind: 'clean', resumed, durationMs };
}

/** Run in the guest through its agent (the depot's exec), with a time limit. */
export type GuestExec = (cmd: string, args: string[], opts: { timeoutMs: number }) => Promise<{ exitCode: number; stderr: string }>;

/** The real steps for a qemu copy: QMP on its socket, the guest agent through the depot. */
export function qemuUnfenceSteps(o: {
  qmpSocket: string;
  nic: string;
  primaryUnit: string | undefined;
  exec: GuestExec;
  address: { release(): Promise<unknown>; held(): Promise<boolean> };
  replace: () => Promise<void>;
  /** Per agent round trip (a just-resumed guest under TCG answers slowly). */
  agentTimeoutMs?: number;
}): UnfenceSteps {
  const qmp = async (command: string, args?: Record<string, unknown>): Promise<unknown> => {
    const q = await QmpClient.connect(o.qmpSocket, { timeoutMs: 5000 });
    try {
      return await q.execute(command, args, 5000);
    } finally {
      q.close();
    }
  };
  return {
    async runState() {
      try {
        return ((await qmp('query-status')) as { status?: string }).status ?? 'unknown';
      } catch (err) {
        // No socket, or nobody listening on it: no QEMU runs for this copy.
        if (/ENOENT|ECONNREFUSED/.test(errorMessage(err)) || /ENOENT|ECONNREFUSED/.test(String((err as NodeJS.ErrnoException).code))) return undefined;
        throw err;
      }
    },
    async setLink(up) {
      await qmp('set_link', { name: o.nic, up });
    },
    async resume() {
      await qmp('cont');
    },
    async stopPrimaryUnit() {
      if (!o.primaryUnit) return;
      const r = await o.exec('/usr/bin/systemctl', ['stop', o.primaryUnit], { timeoutMs: o.agentTimeoutMs ?? 60_000 });
      if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `systemctl stop ${o.primaryUnit} in the guest failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 300)}`);
    },
    async releaseAddress() {
      await o.address.release();
    },
    addressHeld: () => o.address.held(),
    replace: o.replace,
  };
}
