import type { Command } from 'commander';
import { loadConfig, describeConfig, DEFAULT_CONFIG_PATH } from '../../shared/config.ts';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('Check or explain the configuration');
  config
    .command('check')
    .description('Validate a configuration file (with NAVIGATOR__section__field environment overrides)')
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print the resolved configuration as JSON')
    .action((opts: { config: string; json?: boolean }) => {
      const cfg = loadConfig({ path: opts.config });
      if (opts.json) {
        const redacted = { ...cfg, http: { ...cfg.http, adminToken: cfg.http.adminToken ? '[set]' : '' } };
        process.stdout.write(`${JSON.stringify(redacted, null, 2)}\n`);
      } else {
        process.stdout.write(`${opts.config}: valid\n`);
      }
    });
  config
    .command('fields')
    .description('List every configuration field with its default and meaning')
    .action(() => {
      for (const row of describeConfig()) {
        process.stdout.write(`${row.section}.${row.field}  (default ${JSON.stringify(row.default)})  ${row.description}\n`);
      }
    });
}
