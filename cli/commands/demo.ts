import type { Command } from 'commander';
import { errorMessage } from '../../shared/errors.ts';

// `navigator demo` (what `npm start` runs): the whole system on this machine; Ctrl-C removes
// everything it made. The demo modules are imported when the command runs, so that other
// commands (a depot above all) do not load and keep them.

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Run a 4-depot cluster on this machine with a sample monitoring service, the tracking page and a power cut every interval')
    .option('--depots <n>', 'workstations (depots) in the demo LAN', '4')
    .option('--interval <s>', 'seconds between power cuts of the primary\'s workstation', '60')
    .option('--no-chaos', 'no power cuts')
    .option('--loopback', 'use loopback addresses even as root (no namespaces)')
    .option('--cleanup', 'only remove what demos that were killed (not stopped with Ctrl-C) left behind, then exit')
    .action(async (o: { depots: string; interval: string; chaos: boolean; loopback?: boolean; cleanup?: boolean }) => {
      if (o.cleanup) {
        const { sweepStaleDemos } = await import('../../demo/registry.ts');
        const swept = await sweepStaleDemos();
        process.stdout.write(swept.length ? `removed what demos ${swept.join(', ')} left behind\n` : 'nothing left behind by earlier demos\n');
        return;
      }
      const { Demo } = await import('../../demo/demo.ts');
      const out = (line: string) => process.stdout.write(`[${new Date().toLocaleTimeString()}] ${line}\n`);
      const demo = new Demo({ depots: Number(o.depots), intervalS: Number(o.interval), chaos: o.chaos, loopback: o.loopback === true, out });
      let signalled = false;
      const finish = (code: number) => {
        demo.stop().then(
          () => {
            out('demo stopped; everything it made is removed');
            process.exit(code);
          },
          (err: unknown) => {
            process.stderr.write(`navigator demo: ${errorMessage(err)}\n`);
            process.exit(1);
          },
        );
      };
      const onSignal = (sig: NodeJS.Signals) => {
        if (signalled) {
          out(`${sig} again: still cleaning up, please wait`);
          return;
        }
        signalled = true;
        out(`${sig}: stopping the demo and removing everything it made ...`);
        finish(0);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      process.on('SIGHUP', onSignal);
      try {
        await demo.start();
      } catch (err) {
        if (signalled) return; // cleanup is already under way
        signalled = true;
        process.stderr.write(`navigator demo: ${errorMessage(err)}\n`);
        out('cleaning up ...');
        finish(1);
        return;
      }
      // Keep running until a signal: the depots are separate processes, so hold the event loop open.
      setInterval(() => undefined, 3_600_000);
    });
}
