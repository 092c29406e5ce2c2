import type { Command } from 'commander';
import { createLogger } from '../../shared/logger.ts';
import { DEFAULT_LAYOUT, type InstallLayout } from '../../depot/install/layout.ts';

interface Common {
  root: string;
  user: string;
  config: string;
  dataDir: string;
  storeDir: string;
}

function layoutOf(o: Common): InstallLayout {
  return { ...DEFAULT_LAYOUT, depotUser: o.user, configPath: o.config, dataDir: o.dataDir, storeDir: o.storeDir };
}

// install.ts (and execa with it) is imported when one of these commands runs, not by every
// `navigator` process: `depot run` never needs it.

/** Adds `install` and `uninstall` under `navigator depot`. */
export function registerDepotInstall(depot: Command): void {
  const common = (c: Command) =>
    c
      .option('--config <file>', 'configuration file', DEFAULT_LAYOUT.configPath)
      .option('--user <name>', 'system user the depot runs as', DEFAULT_LAYOUT.depotUser)
      .option('--data-dir <dir>', 'state folder (node.dataDir)', DEFAULT_LAYOUT.dataDir)
      .option('--store-dir <dir>', 'image store (store.dir), the receive account\'s chroot', DEFAULT_LAYOUT.storeDir)
      .option('--root <dir>', 'work under this root instead of / (for tests; skips systemctl)', '/');

  common(
    depot
      .command('install')
      .description(
        'Install the depot from this checkout as the Debian package does: users, folders, swarm key, SSH keys, config, systemd unit, sshd drop-in for the receive account, polkit rule; then start it',
      ),
  )
    .option('--swarm-key <file>', 'copy this swarm key (the same file on every depot); default: keep the one there, or make one')
    .option('--no-start', 'do not enable and start the unit')
    .option('--packaged', "as the Debian package's postinst: the unit, drop-in and polkit rule are the package's; no build, no systemctl")
    .action(async (opts: Common & { swarmKey?: string; start: boolean; packaged?: boolean }) => {
      const { installDepot } = await import('../../depot/install/install.ts');
      const res = await installDepot({
        root: opts.root,
        layout: layoutOf(opts),
        ...(opts.swarmKey ? { swarmKeyFrom: opts.swarmKey } : {}),
        packaged: opts.packaged ?? false,
        start: opts.start,
        logger: createLogger({ level: 'warn' }),
      });
      if (res.unitPath) process.stdout.write(`installed ${res.unitPath}\n`);
      for (const item of res.created) process.stdout.write(`  created ${item}\n`);
      process.stdout.write(`config: ${res.configPath}\nswarm key: ${res.swarmKeyPath} (copy the same file to every depot)\n`);
    });

  common(depot.command('uninstall').description('Stop and remove the depot service, the sshd drop-in and the polkit rule; configuration, keys and images are kept unless --purge'))
    .option('--purge', 'also remove configuration, keys, state, images and the system users')
    .action(async (opts: Common & { purge?: boolean }) => {
      const { uninstallDepot } = await import('../../depot/install/uninstall.ts');
      const removed = await uninstallDepot({ root: opts.root, layout: layoutOf(opts), purge: opts.purge ?? false, logger: createLogger({ level: 'warn' }) });
      for (const item of removed) process.stdout.write(`removed ${item}\n`);
      if (!opts.purge) process.stdout.write(`kept ${opts.config}, ${opts.dataDir} and ${opts.storeDir} (images); --purge removes them\n`);
    });
}
