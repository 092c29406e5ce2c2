import { Command, CommanderError } from 'commander';
import { VERSION } from '../shared/version.ts';
import { isNavigatorError, errorMessage } from '../shared/errors.ts';
import { registerKeygen } from './commands/keygen.ts';
import { registerConfig } from './commands/config.ts';
import { registerDepot } from './commands/depot.ts';
import { registerStatus } from './commands/status.ts';
import { registerPlacement } from './commands/placement.ts';
import { registerPilot } from './commands/pilot.ts';
import { registerHistory } from './commands/history.ts';
import { registerDemo } from './commands/demo.ts';
import { registerAlerts } from './commands/alerts.ts';
import { registerTrust } from './commands/trust.ts';
import { registerWitness } from './commands/witness.ts';

// The `navigator` command. Each command lives in cli/commands/<name>.ts and registers itself
// here; this file only composes them and turns errors into one clear line and an exit code.
export function buildProgram(): Command {
  const program = new Command('navigator')
    .description('Keeps a monitoring service available on a LAN: depots, pilots, failover, tracking')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride();
  registerKeygen(program);
  registerConfig(program);
  registerDepot(program);
  registerStatus(program);
  registerPlacement(program);
  registerPilot(program);
  registerHistory(program);
  registerAlerts(program);
  registerDemo(program);
  registerTrust(program);
  registerWitness(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // `navigator status | head` must not crash with EPIPE.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    const code = isNavigatorError(err) ? ` [${err.code}]` : '';
    process.stderr.write(`navigator: ${errorMessage(err)}${code}\n`);
    if (process.env.NAVIGATOR_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
}
