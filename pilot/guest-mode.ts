import { join } from 'node:path';
import type { ContainerSpec } from '../depot/containers/drivers/driver.ts';
import { GUEST_NIC_ID, QGA_SOCKET, QMP_SOCKET } from '../depot/containers/drivers/qemu.ts';

/**
 * How long a depot may take to start a copy: 120 s, plus the guest's boot for a qemu spec that
 * waits for it (bootTimeoutMs: start returns once the guest agent answers; TCG boots take a minute).
 */
export function containerStartTimeoutMs(spec: ContainerSpec): number {
  return 120_000 + (spec.driver === 'qemu' ? (spec.bootTimeoutMs ?? 0) : 0);
}

/**
 * Does the service address of this copy live inside a VM guest? Yes for a qemu container whose
 * guest sits on the LAN (`network`) and has a guest agent: then the pilot moves the address in the
 * guest (GuestServiceAddress) and the fence guard fences the guest through QEMU's sockets in the
 * container folder. Otherwise (process, vmrun, a qemu machine without LAN or agent) the address is
 * the host's. Pure: the spec and the container folder decide.
 */
export function guestSocketsOf(spec: ContainerSpec, containerDir: string): { qmpSocket: string; qgaSocket: string; nic: string } | undefined {
  if (spec.driver !== 'qemu' || !spec.network || !spec.guestAgent) return undefined;
  return { qmpSocket: join(containerDir, QMP_SOCKET), qgaSocket: join(containerDir, QGA_SOCKET), nic: GUEST_NIC_ID };
}
