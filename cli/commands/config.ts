import type { Command } from 'commander';
import { loadConfig, describeConfig, DEFAULT_CONFIG_PATH, type Config } from '../../shared/config.ts';
import { explainPolicy, policyWarnings } from '../../pilot/policy.ts';
import { alertsWarnings, explainAlerts } from '../../depot/alerts/explain.ts';

/** What `config check` says about a valid file: the policy and the alerts in words, then warnings. */
export function explainConfig(cfg: Config, now = Date.now()): string {
  const election = (cfg as { election?: { preferredVoters?: string[] } }).election;
  const lines = [
    'policy:',
    ...explainPolicy({ policy: cfg.policy, ...(election ? { election } : {}) }, now).map((l) => `  ${l}`),
    'alerts:',
    ...explainAlerts(cfg.alerts).map((l) => `  ${l}`),
  ];
  const warnings = [...policyWarnings(cfg), ...alertsWarnings(cfg.alerts)];
  if (warnings.length) lines.push('warnings:', ...warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}

export function registerConfig(program: Command): void {
  const config = program.command('config').description('Check or explain the configuration');
  config
    .command('check')
    .description('Validate a configuration file (with NAVIGATOR__section__field environment overrides) and explain its policy and alerts')
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print the resolved configuration as JSON')
    .action((opts: { config: string; json?: boolean }) => {
      const cfg = loadConfig({ path: opts.config });
      if (opts.json) {
        const set = (v: string) => (v ? '[set]' : '');
        const redacted = {
          ...cfg,
          http: { ...cfg.http, adminToken: set(cfg.http.adminToken) },
          alerts: { ...cfg.alerts, smtpPassword: set(cfg.alerts.smtpPassword), webhookSecret: set(cfg.alerts.webhookSecret) },
        };
        process.stdout.write(`${JSON.stringify(redacted, null, 2)}\n`);
      } else {
        process.stdout.write(`${opts.config}: valid\n${explainConfig(cfg)}`);
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
