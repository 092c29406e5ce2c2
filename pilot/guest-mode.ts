import { join } from 'node:path';
import { NavigatorError } from '../shared/errors.ts';
import type { ContainerSpec } from '../depot/containers/drivers/driver.ts';
import { GUEST_NIC_ID, QGA_SOCKET, QMP_SOCKET } from '../depot/containers/drivers/qemu.ts';

/**
 * How long a depot may take to start a copy: 120 s, plus the guest's boot for a qemu spec that
 * waits for it (bootTimeoutMs: start returns once the guest agent answers; TCG boots take a minute).
 */
export function containerStartTimeoutMs(spec: ContainerSpec): number {
  return 120_000 + (spec.driver === 'qemu' ? (spec.bootTimeoutMs ?? 0) : 0);
}

/** A qemu copy whose guest sits on the LAN with a guest agent: its address and its database live in the guest. Pure. */
export function isGuestPacked(spec: ContainerSpec): boolean {
  return spec.driver === 'qemu' && !!spec.network && !!spec.guestAgent;
}

/**
 * Does the service address of this copy live inside a VM guest? Yes for a qemu container whose
 * guest sits on the LAN (`network`) and has a guest agent: then the pilot moves the address in the
 * guest (GuestServiceAddress) and the fence guard fences the guest through QEMU's sockets in the
 * container folder. Otherwise (process, vmrun, a qemu machine without LAN or agent) the address is
 * the host's. Pure: the spec and the container folder decide.
 */
export function guestSocketsOf(spec: ContainerSpec, containerDir: string): { qmpSocket: string; qgaSocket: string; nic: string } | undefined {
  if (!isGuestPacked(spec)) return undefined;
  return { qmpSocket: join(containerDir, QMP_SOCKET), qgaSocket: join(containerDir, QGA_SOCKET), nic: GUEST_NIC_ID };
}

/**
 * Where a copy's database answers, as the pilots reach it: the guest's own address for a copy
 * packed as a guest on the LAN (its MariaDB runs in the guest; `guestAddress` in its heartbeat
 * report), else its host's address. Undefined while a guest's address is not known yet: such a
 * copy is not synced to or trusted as a source rather than reached at its host, which holds no
 * server of the service. Pure.
 */
export function dbAddressOf(copy: { address: string | undefined; report: { guestAddress?: string | undefined } }, guest: boolean): string | undefined {
  return guest ? copy.report.guestAddress : copy.address;
}

/** A promotion waits this long for the guest's database (TCG: MariaDB answers ~15 s after the agent). */
export const GUEST_DB_READY_WAIT_MS = 180_000;

/** A freshly started process copy's server answers within seconds; the last-resort load retries this long. */
export const HOST_DB_READY_WAIT_MS = 60_000;

/**
 * Where a copy just started on this host (the last-resort recovery's) gets its database loaded:
 * into its guest, at the guest's own address, waiting as a promotion does for the guest's MariaDB
 * (it starts ~15 s after the agent under TCG); else into the server on this host (127.0.0.1). Pure.
 */
export function ownDbReach(spec: ContainerSpec): { inGuest: boolean; readyWaitMs: number } {
  return isGuestPacked(spec) ? { inGuest: true, readyWaitMs: GUEST_DB_READY_WAIT_MS } : { inGuest: false, readyWaitMs: HOST_DB_READY_WAIT_MS };
}

/** This copy's guest address, where its own database answers; fails while it is not known. */
export async function guestDbAddress(containers: { guestAddress(id: string): Promise<string | undefined> }, container: string): Promise<string> {
  const a = await containers.guestAddress(container);
  if (!a) throw new NavigatorError('DRIVER_FAILED', `container ${container}: its guest's LAN address is not known: give the qemu spec a network.guestAddress, or a network.guestAddressOffset with the host's address on network.bridge`);
  return a;
}
