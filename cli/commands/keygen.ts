import type { Command } from 'commander';
import { writeSwarmKey } from '../../depot/swarm-key.ts';
import { DEFAULT_CONFIG_PATH } from '../../shared/config.ts';

export function registerKeygen(program: Command): void {
  program
    .command('keygen')
    .description('Write a new private network (swarm) key; copy the same file to every depot')
    .option('--out <file>', 'where to write it', '/etc/navigator/swarm.key')
    .option('--force', 'replace an existing key')
    .action(async (opts: { out: string; force?: boolean }) => {
      await writeSwarmKey(opts.out, opts.force ?? false);
      process.stdout.write(`wrote swarm key ${opts.out} (mode 0600); set network.swarmKeyFile in ${DEFAULT_CONFIG_PATH} on every depot\n`);
    });
}
