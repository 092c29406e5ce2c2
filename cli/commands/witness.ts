import type { Command } from 'commander';
import { loadConfig } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { errorMessage } from '../../shared/errors.ts';
import { startWitness } from '../../pilot/election/witness.ts';

// `navigator witness`: the tiny vote-only process for an always-on machine (pilot/election/witness.ts).
// It reads a depot-format configuration (deploy/navigator-witness.yaml): network.listen,
// network.swarmKeyFile, network.identityFile, node.dataDir, the pilot section's lease timing
// (the same as the depots') and log.level; every other field is ignored.

const collect = (value: string, previous: string[] = []) => [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)];

export function registerWitness(program: Command): void {
  program
    .command('witness')
    .description('Run a witness in the foreground: a third vote for services with two voters, holding no copy (systemd runs this)')
    .option('--config <file>', 'configuration file (default /etc/navigator/navigator.yaml if present; see deploy/navigator-witness.yaml)')
    .option('--listen <multiaddr>', 'libp2p listen address; repeat or comma-separate (network.listen)', collect)
    .option('--data-dir <dir>', 'state folder: identity key and the promises made (node.dataDir)')
    .option('--swarm-key <file>', 'private network key file (network.swarmKeyFile)')
    .option('--log-level <level>', 'log level (log.level)')
    .action(async (f: { config?: string; listen?: string[]; dataDir?: string; swarmKey?: string; logLevel?: string }) => {
      const overrides: Record<string, Record<string, unknown>> = { node: {}, network: {}, log: {} };
      if (f.listen) overrides.network!.listen = f.listen;
      if (f.swarmKey) overrides.network!.swarmKeyFile = f.swarmKey;
      if (f.dataDir) overrides.node!.dataDir = f.dataDir;
      if (f.logLevel) overrides.log!.level = f.logLevel;
      const config = loadConfig({ ...(f.config !== undefined ? { path: f.config } : {}), overrides });
      const logger = createLogger({ level: config.log.level });
      const witness = await startWitness(config, logger);
      // One line a script can read: where the depots reach this witness.
      process.stdout.write(`${JSON.stringify({ witness: witness.addresses() })}\n`);
      let stopping = false;
      const onSignal = (signal: NodeJS.Signals) => {
        if (stopping) process.exit(1);
        stopping = true;
        logger.info({ event: 'signal', signal }, `received ${signal}, stopping`);
        void witness.stop().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ event: 'stop-failed', err: errorMessage(err) }, 'stop failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
}
