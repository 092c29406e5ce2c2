import type { Command } from 'commander';
import { z } from 'zod';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { AlertRecord, type AlertsResponse, type ChannelStatus } from '../../shared/alert.ts';
import { alertChannels, sendTest } from '../../depot/alerts/channels.ts';
import { getDepotJson } from '../depot-http.ts';
import { stdoutPainter, type Painter } from '../colour.ts';
import { renderTable } from '../table.ts';
import { DEFAULT_API } from './status.ts';

// `navigator alerts`: the cluster's alerts as a depot sees them (open first), with each channel's
// delivery; `navigator alerts test`: a test message through every channel of a configuration
// file, sent from here (no depot needed), so an admin checks the webhook and mail settings at once.

const ChannelRow = z.object({ channel: z.string(), target: z.string(), pending: z.number(), failures: z.number(), sent: z.number() }).passthrough();
const Response = z.object({
  now: z.number(),
  enabled: z.boolean(),
  sender: z.object({ name: z.string(), peerId: z.string(), self: z.boolean(), sending: z.boolean() }),
  channels: z.array(ChannelRow),
  alerts: z.array(AlertRecord),
});

const time = (t: number | undefined) => (t === undefined ? '-' : new Date(t).toISOString().replace('T', ' ').slice(0, 19));

export function formatAlerts(res: AlertsResponse, paint: Painter): string {
  const lines: string[] = [];
  lines.push(`sender: ${res.sender.name || 'none'}${res.enabled ? '' : ' (alerts disabled in this depot\'s configuration)'}`);
  const channels = res.channels as ChannelStatus[];
  if (channels.length === 0) lines.push('channels: none configured on this depot (alerts.webhookUrl, alerts.mailTo)');
  for (const c of channels) {
    const state = c.failures > 0 ? paint('red', `failing (${c.failures} in a row: ${c.lastError ?? ''})`) : paint('green', 'ok');
    lines.push(`channel ${c.channel}: ${c.target}: ${state}; ${c.sent} sent, ${c.pending} pending`);
  }
  lines.push('');
  if (res.alerts.length === 0) {
    lines.push('no alerts');
  } else {
    const head = ['OPENED', 'STATE', 'SEVERITY', 'TYPE', 'SERVICE', 'HOST', 'SENT', 'SUMMARY'];
    const rows = res.alerts.map((a) => [
      time(a.openedAt),
      a.resolvedAt === undefined ? 'open' : `resolved ${time(a.resolvedAt).slice(11)}`,
      a.severity,
      a.type,
      a.service || '-',
      a.host || '-',
      [...a.sentOpen.map((ch) => `${ch}`), ...a.sentResolve.map((ch) => `${ch}(resolve)`)].join(' ') || '-',
      a.resolvedAt === undefined ? a.summary : (a.resolveSummary ?? a.summary),
    ]);
    lines.push(...renderTable(head, rows, { paint, rowStyle: (i) => (res.alerts[i]!.resolvedAt === undefined ? (res.alerts[i]!.severity === 'critical' ? 'red' : 'yellow') : 'dim') }));
  }
  return `${lines.join('\n')}\n`;
}

export function registerAlerts(program: Command): void {
  const alerts = program
    .command('alerts')
    .description('Alerts of the cluster (open first) and the delivery of each channel; `alerts test` sends a test message')
    .option('--api <url>', 'depot to ask', DEFAULT_API)
    .option('--json', 'print JSON')
    .action(async (o: { api: string; json?: boolean }) => {
      const res = (await getDepotJson(o.api, '/api/alerts', Response, { what: 'the alert table' })) as AlertsResponse;
      process.stdout.write(o.json ? `${JSON.stringify(res, null, 2)}\n` : formatAlerts(res, stdoutPainter()));
    });
  alerts
    .command('test')
    .description('Send a test message through every alert channel of a configuration file (from this host, now)')
    .option('--config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print JSON')
    .action(async (o: { config: string; json?: boolean }) => {
      const cfg = loadConfig({ path: o.config });
      const channels = alertChannels(cfg.alerts);
      if (channels.length === 0) throw new NavigatorError('CONFIG_INVALID', `${o.config} configures no alert channel: set alerts.webhookUrl and/or alerts.mailTo`);
      const results = await sendTest(channels, { cluster: cfg.alerts.clusterName, sender: cfg.node.name, now: Date.now() });
      if (o.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      else for (const r of results) process.stdout.write(`${r.channel} (${r.target}): ${r.ok ? 'sent' : `FAILED: ${r.error}`}\n`);
      if (results.some((r) => !r.ok)) process.exitCode = 1;
    });
}
