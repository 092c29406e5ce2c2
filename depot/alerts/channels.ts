import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Channel } from '../../shared/alert.ts';
import type { AlertsConfig } from '../../shared/config-alerts.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { VERSION } from '../../shared/version.ts';
import type { Notification } from './engine.ts';
import { mailContent, webhookBody, type MessageContext } from './message.ts';

// The alert channels: a webhook (JSON POST, HMAC-SHA256 signature when a key is configured) and
// mail (SMTP through nodemailer, or the host's sendmail). Secrets are read from their file at each
// send (so a rotated key needs no restart), never kept in an error or a log line.

export interface AlertChannel {
  channel: Channel;
  /** Where it goes, for people: URL without credentials, recipients and relay. */
  target: string;
  send(notifications: readonly Notification[], ctx: MessageContext, test?: boolean): Promise<void>;
}

export const SIGNATURE_HEADER = 'x-navigator-signature';

/** The configured secret: the file's content (trimmed) or the inline value; '' when none. */
export function readSecret(file: string, inline: string, what: string): string {
  if (!file) return inline;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new NavigatorError('CONFIG_INVALID', `cannot read ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
}

export function signBody(body: string, key: string): string {
  return `sha256=${createHmac('sha256', key).update(body).digest('hex')}`;
}

/** The URL with any password replaced (for the page and logs). */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

function webhookChannel(cfg: AlertsConfig): AlertChannel {
  return {
    channel: 'webhook',
    target: safeUrl(cfg.webhookUrl),
    async send(notifications, ctx, test = false) {
      const body = webhookBody(notifications, ctx, test);
      const key = readSecret(cfg.webhookSecretFile, cfg.webhookSecret, 'alerts.webhookSecretFile');
      const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': `navigator/${VERSION}` };
      if (key) headers[SIGNATURE_HEADER] = signBody(body, key);
      let res: Response;
      try {
        res = await fetch(cfg.webhookUrl, { method: 'POST', headers, body, signal: AbortSignal.timeout(cfg.webhookTimeoutMs), redirect: 'error' });
      } catch (err) {
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new Error(`POST ${safeUrl(cfg.webhookUrl)}: ${cause?.code ?? cause?.message ?? errorMessage(err)}`);
      }
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) throw new Error(`POST ${safeUrl(cfg.webhookUrl)}: HTTP ${res.status}`);
    },
  };
}

function mailChannel(cfg: AlertsConfig): AlertChannel {
  const target = `${cfg.mailTo.join(', ')} via ${cfg.mailTransport === 'sendmail' ? cfg.sendmailPath : `${cfg.smtpHost}:${cfg.smtpPort}`}`;
  return {
    channel: 'mail',
    target,
    async send(notifications, ctx, test = false) {
      // Loaded at the first mail: an idle depot does not hold the mail library.
      const nodemailer = (await import('nodemailer')).default;
      const transport =
        cfg.mailTransport === 'sendmail'
          ? nodemailer.createTransport({ sendmail: true, path: cfg.sendmailPath, newline: 'unix' })
          : nodemailer.createTransport({
              host: cfg.smtpHost,
              port: cfg.smtpPort,
              secure: cfg.smtpSecure,
              requireTLS: cfg.smtpRequireTls,
              connectionTimeout: cfg.mailTimeoutMs,
              greetingTimeout: cfg.mailTimeoutMs,
              socketTimeout: cfg.mailTimeoutMs,
              ...(cfg.smtpUser ? { auth: { user: cfg.smtpUser, pass: readSecret(cfg.smtpPasswordFile, cfg.smtpPassword, 'alerts.smtpPasswordFile') } } : {}),
            });
      const { subject, text } = mailContent(notifications, ctx, test);
      const ids = notifications.map((n) => `${n.alert.id}:${n.phase}`).join(' ');
      try {
        await transport.sendMail({ from: cfg.mailFrom, to: cfg.mailTo, subject, text, headers: { 'X-Navigator-Alerts': ids.slice(0, 900) } });
      } catch (err) {
        // nodemailer's messages name the step and the server's reply, never the password.
        throw new Error(`mail ${target}: ${errorMessage(err)}`);
      } finally {
        transport.close();
      }
    },
  };
}

/** The channels this configuration sends to (none when alerts are off). */
export function alertChannels(cfg: AlertsConfig): AlertChannel[] {
  const out: AlertChannel[] = [];
  if (cfg.webhookUrl) out.push(webhookChannel(cfg));
  if (cfg.mailTo.length > 0) out.push(mailChannel(cfg));
  return out;
}

export interface TestResult {
  channel: Channel;
  target: string;
  ok: boolean;
  error?: string;
}

/** A test message (no alerts in it) through each channel, now: what `navigator alerts test` sends. */
export async function sendTest(channels: readonly AlertChannel[], ctx: MessageContext): Promise<TestResult[]> {
  return Promise.all(
    channels.map(async (ch): Promise<TestResult> => {
      try {
        await ch.send([], ctx, true);
        return { channel: ch.channel, target: ch.target, ok: true };
      } catch (err) {
        return { channel: ch.channel, target: ch.target, ok: false, error: errorMessage(err) };
      }
    }),
  );
}
