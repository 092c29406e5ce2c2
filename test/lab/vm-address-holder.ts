import { QemuSpec } from '../../depot/containers/drivers/driver.ts';
import { QemuDriver } from '../../depot/containers/drivers/qemu.ts';
import { FenceGuard } from '../../pilot/fence-guard.ts';
import { GuestServiceAddress } from '../../pilot/guest-address.ts';
import { createLogger } from '../../shared/logger.ts';

// Stands in for the pilot of a primary whose service is a QEMU guest (the VM lab test, bench:vm):
// arms a fence guard for the guest, takes the service address in the guest through it
// (GuestServiceAddress: guest agent), renews the lease every leaseMs/4 and re-asserts the address,
// until killed. kill -9 of this process is the depot's kill -9: the guard sees its stdin close and
// fences the guest (QMP stop, set_link off). Usage:
//   node --import tsx test/lab/vm-address-holder.ts '{"dir":…,"id":…,"spec":{…},"address":"10.77.3.100/24","leaseMs":3000}'

const cfg = JSON.parse(process.argv[2] ?? '{}') as { dir: string; id: string; spec: unknown; address: string; leaseMs: number };
const log = createLogger({ level: 'info' });
const driver = new QemuDriver(QemuSpec.parse(cfg.spec), { id: cfg.id, dir: cfg.dir, logger: log });
const guard = new FenceGuard({ address: cfg.address, iface: 'eth0', logger: log, guest: { qmpSocket: driver.qmpPath, qgaSocket: driver.qgaPath } });
const addr = new GuestServiceAddress({
  address: cfg.address,
  iface: 'eth0',
  logger: log,
  run: (c, a, o) => driver.exec(c, a, o),
  spawn: (c, a) => driver.spawnInGuest(c, a),
  adder: () => guard.add(15_000),
});
await guard.arm(cfg.leaseMs);
const r = await addr.take();
process.stdout.write(`${JSON.stringify({ event: 'holder-took', ...r })}\n`);
setInterval(() => guard.lease(cfg.leaseMs), Math.max(100, Math.floor(cfg.leaseMs / 4)));
setInterval(() => void addr.reassert().catch((e: unknown) => process.stdout.write(`${JSON.stringify({ event: 'holder-reassert-failed', err: String(e) })}\n`)), 5000);
