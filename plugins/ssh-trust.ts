import { join } from 'node:path';
import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import { SshTrust } from '../depot/ssh-trust/trust.ts';

// Zero-touch SSH trust for image shipping (depot/ssh-trust/trust.ts): started before the pilots
// so a primary's first transfer already finds the pins; this depot's SFTP key and sshd host key
// fingerprint go into its heartbeat, and GET /api/depots and the tracking page show how it
// judges every other depot's host key.

export type SshTrustComponents = Pick<DepotComponents, 'config' | 'logger' | 'self' | 'members' | 'heartbeat' | 'depotInfo'>;

export interface SshTrustPlugin extends DepotPlugin {
  readonly trust: SshTrust;
}

export function sshTrustPlugin(): (components: SshTrustComponents) => SshTrustPlugin {
  return (c) => {
    const { ship, node } = c.config;
    const trust = new SshTrust({
      dir: join(node.dataDir, 'ssh'),
      keyFile: ship.sshKeyFile,
      hostKeyFile: ship.hostKeyFile,
      authorizedKeysFile: ship.authorizedKeysFile,
      members: c.members,
      logger: c.logger,
    });
    return {
      name: 'ssh-trust',
      trust,
      async start() {
        await trust.start();
        c.heartbeat.contribute(() => trust.heartbeatContent());
        c.depotInfo.add((peerId) => (peerId === c.self.peerId ? {} : { hostKeyTrust: trust.hostKeyOf(peerId) }));
      },
      stop: () => trust.stop(),
    };
  };
}
