import { describe, expect, it } from 'vitest';
import { ContainerSpec, QemuSpec } from '../../depot/containers/drivers/driver.ts';
import { GUEST_DB_READY_WAIT_MS, HOST_DB_READY_WAIT_MS, isGuestPacked, ownDbReach } from '../../pilot/guest-mode.ts';
import { dumpSourceOf } from '../../pilot/recovery-kits.ts';
import type { CopyView } from '../../pilot/pilot.ts';

// Where the recovery kits and the last-resort load reach a copy's database: a VM-packed copy's
// MariaDB runs in its guest, at the guest's own address; anything else at its host.

const vm = QemuSpec.parse({ driver: 'qemu', guestAgent: true, network: { bridge: 'navbr0', guestAddressOffset: 50 } });

function copy(host: string, role: string, extra: Partial<CopyView> & { guestAddress?: string } = {}): CopyView {
  const { guestAddress, ...rest } = extra;
  return {
    peerId: `p-${host}`,
    host,
    depotState: 'alive',
    incarnation: 1,
    address: `10.0.0.${host.slice(1)}`,
    report: { id: `zbx-${host}`, service: 'zbx', state: 'running', role, term: 3, image: '', syncFailing: false, ...(guestAddress ? { guestAddress } : {}) } as CopyView['report'],
    ...rest,
  };
}

describe('the database of a VM-packed copy, for recovery', () => {
  it('a copy is guest-packed only as a qemu guest on the LAN with an agent', () => {
    expect(isGuestPacked(vm)).toBe(true);
    expect(isGuestPacked({ ...vm, guestAgent: false })).toBe(false);
    expect(isGuestPacked(QemuSpec.parse({ driver: 'qemu', guestAgent: true }))).toBe(false);
    expect(isGuestPacked(ContainerSpec.parse({ driver: 'process' }))).toBe(false);
  });

  it("a kit holder dumps the alive primary: at its guest's address for a guest, at its host otherwise", () => {
    const copies = [copy('w2', 'standby', { guestAddress: '10.0.0.52' }), copy('w1', 'primary', { guestAddress: '10.0.0.51' })];
    expect(dumpSourceOf(copies, 'p-w4', true)).toEqual({ address: '10.0.0.51', host: 'w1' });
    expect(dumpSourceOf(copies, 'p-w4', false)).toEqual({ address: '10.0.0.1', host: 'w1' });
  });

  it("no dump while the primary guest's address is unknown, the primary is not alive, or it is this depot", () => {
    expect(dumpSourceOf([copy('w1', 'primary')], 'p-w4', true)).toBeUndefined();
    expect(dumpSourceOf([copy('w1', 'primary', { guestAddress: '10.0.0.51', depotState: 'suspect' })], 'p-w4', true)).toBeUndefined();
    expect(dumpSourceOf([copy('w1', 'primary', { guestAddress: '10.0.0.51' })], 'p-w1', true)).toBeUndefined();
    expect(dumpSourceOf([copy('w1', 'standby', { guestAddress: '10.0.0.51' })], 'p-w4', true)).toBeUndefined();
    expect(dumpSourceOf([copy('w1', 'primary', { address: undefined })], 'p-w4', false)).toBeUndefined();
  });

  it("the last-resort load goes into the new guest and waits as long as a promotion does; a host's server gets a minute", () => {
    expect(ownDbReach(vm)).toEqual({ inGuest: true, readyWaitMs: GUEST_DB_READY_WAIT_MS });
    expect(ownDbReach(ContainerSpec.parse({ driver: 'process' }))).toEqual({ inGuest: false, readyWaitMs: HOST_DB_READY_WAIT_MS });
    expect(GUEST_DB_READY_WAIT_MS).toBeGreaterThan(HOST_DB_READY_WAIT_MS);
  });
});
