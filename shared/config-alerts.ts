import { z } from 'zod';

// Config section `alerts`: where alert messages go (a webhook, mail) and when a condition is worth
// one. Only one depot of the cluster sends (the current primary's, or the live depot with the
// lowest peer id when no service has a primary); every depot keeps the same alert table, so the
// next sender neither repeats nor loses one. Secrets (HMAC key, SMTP password) come from a file
// (preferred) or from this section, and are never logged.

const ms = (def: number, what: string) => z.number().int().positive().default(def).describe(what);

export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export const Severity = z.enum(SEVERITIES);
export type Severity = z.infer<typeof Severity>;

export const AlertsSection = z
  .object({
    enabled: z.boolean().default(true).describe('Send alert messages (the alert table, the page and /api/alerts work either way)'),
    clusterName: z.string().min(1).max(64).default('navigator').describe('Name of this cluster in alert messages (subject lines, the JSON body)'),
    minSeverity: Severity.default('info').describe('Least severity that is sent: info, warning or critical (every alert is still listed on the page)'),
    webhookUrl: z
      .string()
      .default('')
      .refine((u) => u === '' || /^https?:\/\/[^\s/]+/.test(u), 'must be an http:// or https:// URL')
      .describe('Alerts are POSTed here as JSON (see the README for the body); empty: no webhook'),
    webhookSecretFile: z
      .string()
      .default('')
      .describe('File holding the HMAC-SHA256 key: each POST then carries X-Navigator-Signature: sha256=<hex HMAC of the body> (read at each send)'),
    webhookSecret: z.string().default('').describe('The HMAC key itself, when not in webhookSecretFile (a file readable by the depot only is safer)'),
    webhookTimeoutMs: ms(10_000, 'A webhook POST without an answer this long has failed (it is retried)'),
    mailTo: z.array(z.string().min(3).max(254).regex(/^[^\s@]+@[^\s@]+$/, 'not a mail address')).default([]).describe('Mail recipients; empty: no mail'),
    mailFrom: z.string().min(3).max(254).default('navigator@localhost').describe('Sender address of alert mail'),
    mailTransport: z.enum(['smtp', 'sendmail']).default('smtp').describe('smtp: through smtpHost; sendmail: the host\'s sendmail program (sendmailPath)'),
    smtpHost: z.string().min(1).default('localhost').describe('SMTP server (mail relay) host'),
    smtpPort: z.number().int().min(1).max(65535).default(25).describe('SMTP server port (587 for submission, 465 with smtpSecure)'),
    smtpSecure: z.boolean().default(false).describe('TLS from the first byte (SMTPS, port 465); otherwise STARTTLS is used whenever the server offers it'),
    smtpRequireTls: z.boolean().default(false).describe('Refuse to send unless the server offers STARTTLS (never send the password in clear)'),
    smtpUser: z.string().default('').describe('SMTP login; empty: no authentication'),
    smtpPasswordFile: z.string().default('').describe('File holding the SMTP password (read at each send)'),
    smtpPassword: z.string().default('').describe('The SMTP password itself, when not in smtpPasswordFile'),
    sendmailPath: z.string().min(1).default('/usr/sbin/sendmail').describe('sendmail program for mailTransport: sendmail'),
    mailTimeoutMs: ms(30_000, 'A mail not handed over to the server (or sendmail) within this long has failed (it is retried)'),
    downAfterMs: ms(15_000, 'A service with no running primary this long raises a service-down alert'),
    unprotectedAfterMs: ms(120_000, 'A service whose primary has no running standby this long raises an unprotected alert'),
    syncFailingAfterMs: ms(120_000, "A standby whose database copy has been failing this long raises a sync-failing alert"),
    syncLagMs: ms(600_000, 'A standby whose last good database copy is older than this raises a sync-lagging alert'),
    quorumLostAfterMs: ms(5000, 'A service whose voters lack a majority this long raises a quorum-lost alert'),
    resolveAfterMs: ms(30_000, 'A condition must stay clear this long before its alert is resolved (a flapping condition sends no message storm)'),
    eventQuietMs: ms(600_000, 'Events of one kind about one subject (a refused peer, a bad image) join one alert; it is resolved after this long without another'),
    maxPerHour: z.number().int().min(1).max(3600).default(30).describe('Most messages per channel per hour; past it, notifications wait and go out together in the next message'),
    retryBaseMs: ms(5000, 'First wait before a failed delivery is tried again; doubles after each failure in a row'),
    retryMaxMs: ms(300_000, 'Longest wait between two delivery attempts'),
    giveUpAfterMs: ms(86_400_000, 'A notification still not delivered this long after its alert changed is given up (and counted)'),
    senderSettleMs: ms(3000, 'A depot starts sending once it has been the sender in its own view this long (while the primary changes, two depots never both send)'),
    eventMaxAgeMs: ms(600_000, 'Events (failovers in the journal, notices) older than this when first seen raise no alert (a journal filled after a restart)'),
    keepResolvedMs: ms(86_400_000, 'Resolved alerts stay in the table (page, /api/alerts) this long'),
  })
  .strict();
export type AlertsConfig = z.infer<typeof AlertsSection>;
