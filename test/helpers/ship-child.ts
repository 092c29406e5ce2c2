// A sender process for the "sender killed mid-transfer" test: ships one image from a store folder
// to a target store folder over a real sshd, slowly (bandwidth limit), until it is killed.
// Usage: node --import tsx test/helpers/ship-child.ts '<json>'
import { ImageStore } from '../../depot/images/catalog.ts';
import { TokenBucket } from '../../ship/bandwidth.ts';
import { Shipper } from '../../ship/shipper.ts';
import { localShipTarget } from '../../depot/images/ship-target.ts';

const a = JSON.parse(process.argv[2] ?? '{}') as {
  senderDir: string;
  targetDir: string;
  id: string;
  host: string;
  port: number;
  user: string;
  keyFile: string;
  knownHostsFile: string;
  bytesPerSec: number;
};
const sender = new ImageStore({ dir: a.senderDir, keepVersions: 3 });
const target = new ImageStore({ dir: a.targetDir, keepVersions: 3 });
const shipper = new Shipper({ store: sender, ssh: { user: a.user, keyFile: a.keyFile, knownHostsFile: a.knownHostsFile }, requestsInFlight: 16 });
const r = await shipper.ship(a.id, localShipTarget(target, a.host, a.port), { bandwidth: new TokenBucket({ bytesPerSec: a.bytesPerSec, burstBytes: 256 * 1024 }) });
process.stdout.write(JSON.stringify(r) + '\n');
