import type { Command } from 'commander';
import { loadConfig } from '../../shared/config.ts';
import { stopOnSignals } from '../../depot/signals.ts';
import { createWorkstationDepot } from '../../plugins/workstation.ts';
import { registerDepotInstall } from './depot-install.ts';

// `navigator depot run`: start a depot in the foreground (systemd runs this). Flags override the
// configuration file and NAVIGATOR__section__field environment variables, for tests and trials.

interface RunFlags {
  config?: string;
  name?: string;
  dataDir?: string;
  listen?: string[];
  announce?: string[];
  bootstrap?: string[];
  swarmKey?: string;
  mdns?: boolean;
  httpHost?: string;
  httpPort?: string;
  logLevel?: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)];

function flagOverrides(f: RunFlags): Record<string, unknown> {
  const o: Record<string, Record<string, unknown>> = { node: {}, network: {}, http: {}, log: {} };
  if (f.name !== undefined) o.node!.name = f.name;
  if (f.dataDir !== undefined) o.node!.dataDir = f.dataDir;
  if (f.listen !== undefined) o.network!.listen = f.listen;
  if (f.announce !== undefined) o.network!.announce = f.announce;
  if (f.bootstrap !== undefined) o.network!.bootstrap = f.bootstrap;
  if (f.swarmKey !== undefined) o.network!.swarmKeyFile = f.swarmKey;
  if (f.mdns === false) o.network!.mdns = false;
  if (f.httpHost !== undefined) o.http!.host = f.httpHost;
  if (f.httpPort !== undefined) {
    const port = Number(f.httpPort);
    o.http!.port = Number.isInteger(port) ? port : f.httpPort; // a bad value is refused by the schema with its path
  }
  if (f.logLevel !== undefined) o.log!.level = f.logLevel;
  return o;
}

export function registerDepot(program: Command): void {
  const depot = program.command('depot').description('The depot daemon that runs on every workstation');
  depot
    .command('run')
    .description('Run a depot in the foreground until SIGTERM/SIGINT (then it announces `left` and stops)')
    .option('--config <file>', 'configuration file (default /etc/navigator/navigator.yaml if present)')
    .option('--name <name>', 'depot name shown to others (node.name)')
    .option('--data-dir <dir>', 'state folder (node.dataDir)')
    .option('--listen <multiaddr>', 'libp2p listen address; repeat or comma-separate (network.listen)', collect)
    .option('--announce <multiaddr>', 'address to announce; repeat or comma-separate (network.announce)', collect)
    .option('--bootstrap <multiaddr>', 'depot to dial at start, with /p2p/ID; repeat or comma-separate (network.bootstrap)', collect)
    .option('--swarm-key <file>', 'private network key file (network.swarmKeyFile)')
    .option('--no-mdns', 'do not use mDNS discovery (network.mdns=false)')
    .option('--http-host <addr>', 'HTTP listen address (http.host)')
    .option('--http-port <port>', 'HTTP port, 0 for any free port (http.port)')
    .option('--log-level <level>', 'log level (log.level)')
    .action(async (flags: RunFlags) => {
      const config = loadConfig({ ...(flags.config !== undefined ? { path: flags.config } : {}), overrides: flagOverrides(flags) });
      const { depot: d } = createWorkstationDepot({ config, processMetrics: true });
      await d.start();
      // The listening sockets keep the process alive until a signal stops the depot.
      stopOnSignals(d);
    });
  registerDepotInstall(depot);
}
