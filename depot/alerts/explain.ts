import { accessSync, constants } from 'node:fs';
import type { AlertsConfig } from '../../shared/config-alerts.ts';
import { safeUrl } from './channels.ts';
import { formatDuration } from './engine.ts';

// Config section `alerts` in words (`navigator config check`), and the likely mistakes the schema
// cannot see. Secrets are never printed: only whether they are set and where from.

export function explainAlerts(a: AlertsConfig): string[] {
  if (!a.enabled) return ['off (alerts.enabled: false): alerts are only shown on the page and /api/alerts'];
  const lines: string[] = [];
  const secret = (file: string, inline: string) => (file ? `from ${file}` : inline ? 'set inline in the configuration' : 'none');
  lines.push(a.webhookUrl ? `webhook: POST ${safeUrl(a.webhookUrl)}; HMAC key ${secret(a.webhookSecretFile, a.webhookSecret)}` : 'webhook: none (alerts.webhookUrl)');
  if (a.mailTo.length) {
    const via =
      a.mailTransport === 'sendmail'
        ? `${a.sendmailPath}`
        : `SMTP ${a.smtpHost}:${a.smtpPort}${a.smtpSecure ? ' over TLS' : a.smtpRequireTls ? ' with STARTTLS required' : ' (STARTTLS when offered)'}${a.smtpUser ? ` as ${a.smtpUser}, password ${secret(a.smtpPasswordFile, a.smtpPassword)}` : ', no login'}`;
    lines.push(`mail: to ${a.mailTo.join(', ')} from ${a.mailFrom} via ${via}`);
  } else {
    lines.push('mail: none (alerts.mailTo)');
  }
  lines.push(`sent from: the primary's depot (or the lowest live depot when no service has a primary), severity ${a.minSeverity} and up, at most ${a.maxPerHour} messages per channel per hour`);
  lines.push(
    `raised when: no primary for ${formatDuration(a.downAfterMs)}; no standby that could take over (running, its database seeded) for ${formatDuration(a.unprotectedAfterMs)}; a database copy failing for ${formatDuration(a.syncFailingAfterMs)} or older than ${formatDuration(a.syncLagMs)}; semi-synchronous replication fallen back to async; voter quorum lost for ${formatDuration(a.quorumLostAfterMs)}; every failover, last-resort recovery, refused peer and image that failed verification`,
  );
  lines.push(`resolved after ${formatDuration(a.resolveAfterMs)} clear (events: ${formatDuration(a.eventQuietMs)} without another); failed deliveries retried from ${formatDuration(a.retryBaseMs)} up to every ${formatDuration(a.retryMaxMs)}, given up after ${formatDuration(a.giveUpAfterMs)}`);
  return lines;
}

export function alertsWarnings(a: AlertsConfig): string[] {
  const out: string[] = [];
  if (!a.enabled) return out;
  if (!a.webhookUrl && a.mailTo.length === 0) out.push('alerts: no channel (alerts.webhookUrl, alerts.mailTo): alerts are only shown on the page and /api/alerts');
  const readable = (file: string, field: string) => {
    if (!file) return;
    try {
      accessSync(file, constants.R_OK);
    } catch (err) {
      out.push(`alerts.${field}: cannot read ${file} here (${(err as NodeJS.ErrnoException).code ?? 'error'}); the depot reads it at each send as its own user`);
    }
  };
  readable(a.webhookSecretFile, 'webhookSecretFile');
  if (a.mailTransport === 'smtp') readable(a.smtpPasswordFile, 'smtpPasswordFile');
  if (a.webhookSecret && !a.webhookSecretFile) out.push('alerts.webhookSecret is set inline: a configuration file is often readable by others; prefer alerts.webhookSecretFile (mode 0600)');
  if (a.smtpPassword && !a.smtpPasswordFile) out.push('alerts.smtpPassword is set inline: prefer alerts.smtpPasswordFile (mode 0600)');
  if (a.mailTransport === 'smtp' && a.smtpUser && !a.smtpPassword && !a.smtpPasswordFile) out.push('alerts.smtpUser is set without a password (alerts.smtpPasswordFile)');
  if (a.mailTransport === 'smtp' && !a.smtpUser && (a.smtpPassword || a.smtpPasswordFile)) out.push('alerts: an SMTP password is set but no alerts.smtpUser: no login is made');
  if (a.mailTransport === 'smtp' && a.smtpUser && !a.smtpSecure && !a.smtpRequireTls) out.push('alerts: the SMTP password goes in clear if the server offers no STARTTLS; set alerts.smtpRequireTls (or smtpSecure)');
  if (a.webhookUrl.startsWith('http://') && (a.webhookSecret || a.webhookSecretFile)) out.push('alerts.webhookUrl is plain http: the signature proves the sender, but the body travels in clear');
  return out;
}
