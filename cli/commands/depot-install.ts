import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';

interface Common {
  root: string;
  user: string;
  config: string;
  dataDir: string;
}

// install.ts (and execa with it) is imported when one of these commands runs, not by every
// `navigator` process: `depot run` never needs it.

/** Adds `install` and `uninstall` under `navigator depot`. */
export function registerDepotInstall(depot: Command): void {
  depot
    .command('install')
    .description('Install the depot as a systemd service: unit, dedicated user, config, image folders, swarm key')
    .option('--config <file>', 'configuration file to create (kept if it exists)', DEFAULT_CONFIG_PATH)
    .option('--swarm-key <file>', 'copy this swarm key (the same file on every depot); default: make one if none exists')
    .option('--user <name>', 'system user the depot runs as', 'navigator')
    .option('--data-dir <dir>', 'state and image folder', '/var/lib/navigator')
    .option('--root <dir>', 'install under this root instead of / (for packaging and tests; skips systemctl)', '/')
    .option('--no-start', 'do not enable and start the unit')
    .action(async (opts: Common & { swarmKey?: string; start: boolean }) => {
      const { installDepot } = await import('../../depot/install/install.ts');
      const logger = createLogger({ level: 'warn' });
      const res = await installDepot({
        root: opts.root,
        user: opts.user,
        configPath: opts.config,
        dataDir: opts.dataDir,
        ...(opts.swarmKey ? { swarmKeyFrom: opts.swarmKey } : {}),
        start: opts.start,
        logger,
      });
      process.stdout.write(`installed ${res.unitPath}\n`);
      for (const item of res.created) process.stdout.write(`  created ${item}\n`);
      process.stdout.write(`config: ${res.configPath}\nswarm key: ${res.swarmKeyPath} (copy the same file to every depot)\n`);
    });

  depot
    .command('uninstall')
    .description('Remove the systemd unit and configuration; images are kept unless --purge')
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .option('--user <name>', 'system user the depot runs as', 'navigator')
    .option('--data-dir <dir>', 'state and image folder', '/var/lib/navigator')
    .option('--root <dir>', 'uninstall under this root instead of /', '/')
    .option('--purge', 'also remove images, state and the user')
    .action(async (opts: Common & { purge?: boolean }) => {
      const { uninstallDepot } = await import('../../depot/install/install.ts');
      const removed = await uninstallDepot({
        root: opts.root,
        user: opts.user,
        configPath: opts.config,
        dataDir: opts.dataDir,
        purge: opts.purge ?? false,
        logger: createLogger({ level: 'warn' }),
      });
      for (const item of removed) process.stdout.write(`removed ${item}\n`);
      if (!opts.purge) process.stdout.write(`kept ${opts.dataDir} (images); --purge removes it\n`);
    });
}
