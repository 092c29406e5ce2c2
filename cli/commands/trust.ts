import type { Command } from 'commander';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../../shared/config.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';

// `navigator trust`: the sshd host keys this depot pinned from the other depots' heartbeats
// (depot/ssh-trust/). `forget` is the one deliberate step when a host's sshd keys were
// regenerated on purpose: the running depot reloads the file and pins what that depot announces
// now. Run it as root (or the depot's user) on the host whose depot refuses to ship.

async function pinsFile(configPath: string): Promise<string> {
  const cfg = loadConfig({ path: configPath });
  const { PINS_FILE } = await import('../../depot/ssh-trust/trust.ts');
  return join(cfg.node.dataDir, 'ssh', PINS_FILE);
}

async function readPins(file: string) {
  const { PinFile, emptyPins } = await import('../../depot/ssh-trust/host-key-pins.ts');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyPins();
    throw new NavigatorError('CONFIG_INVALID', `cannot read host key pins ${file}: ${errorMessage(err)}`);
  }
  return PinFile.parse(JSON.parse(text));
}

export function registerTrust(program: Command): void {
  const trust = program.command('trust').description('sshd host keys pinned from the other depots\' heartbeats (image shipping)');
  trust
    .command('list')
    .description('List the pinned host keys')
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const pins = await readPins(await pinsFile(opts.config));
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(pins.pins, null, 2)}\n`);
        return;
      }
      for (const [peerId, p] of Object.entries(pins.pins)) {
        process.stdout.write(`${p.name}  ${p.fingerprint}  pinned ${new Date(p.pinnedAt).toISOString()}  ${peerId}\n`);
      }
    });
  trust
    .command('forget <depot>')
    .description("Drop the pin of a depot (name or peer id) whose sshd host key changed on purpose; the depot pins what it announces next")
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .action(async (who: string, opts: { config: string }) => {
      const file = await pinsFile(opts.config);
      const { forgetPins } = await import('../../depot/ssh-trust/host-key-pins.ts');
      const { writeFileDurable } = await import('../../shared/durable-file.ts');
      const { pins, removed } = forgetPins(await readPins(file), who);
      if (removed.length === 0) throw new NavigatorError('NOT_FOUND', `no host key pinned for ${who} in ${file} (\`navigator trust list\` shows the pins)`);
      // Keep the file the depot's: root running this must not leave it unreadable to the depot.
      const st = await stat(file);
      await writeFileDurable(file, `${JSON.stringify(pins, null, 1)}\n`, { mode: 0o640, owner: { uid: st.uid, gid: st.gid } });
      process.stdout.write(`forgot the host key of ${who} (${removed.join(', ')}); the depot pins what it announces next\n`);
    });
}
