import type { AlertRecord } from '../../shared/alert.ts';
import type { Notification } from './engine.ts';

// What an alert message says: the webhook's JSON body and the mail's subject and text. One
// message carries every notification pending for its channel (usually one; more after a rate
// limit or while a receiver was down).

export interface MessageContext {
  cluster: string;
  /** Depot that sends. */
  sender: string;
  now: number;
}

const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());

/** One notification in the webhook body. */
export function notificationJson(n: Notification) {
  const a = n.alert;
  return {
    id: a.id,
    status: n.phase,
    type: a.type,
    severity: a.severity,
    service: a.service,
    host: a.host,
    summary: a.summary,
    resolveSummary: a.resolveSummary ?? null,
    details: a.details,
    count: a.count,
    openedAt: iso(a.openedAt),
    resolvedAt: iso(a.resolvedAt),
  };
}

/** The JSON POSTed to the webhook (version 1; fields are only ever added). */
export function webhookBody(notifications: readonly Notification[], ctx: MessageContext, test = false): string {
  return JSON.stringify({
    version: 1,
    cluster: ctx.cluster,
    sender: ctx.sender,
    sentAt: iso(ctx.now),
    test,
    alerts: notifications.map(notificationJson),
  });
}

function line(n: Notification): string {
  const a = n.alert;
  const head = `${n.phase === 'resolved' ? 'RESOLVED' : a.severity.toUpperCase()} ${a.type}${a.service ? ` ${a.service}` : ''}`;
  return `${head}: ${n.phase === 'resolved' ? (a.resolveSummary ?? a.summary) : a.summary}`;
}

export function mailContent(notifications: readonly Notification[], ctx: MessageContext, test = false): { subject: string; text: string } {
  const first = notifications[0];
  const subject = test
    ? `[${ctx.cluster}] test message from Navigator on ${ctx.sender}`
    : notifications.length === 1 && first
      ? `[${ctx.cluster}] ${line(first)}`.slice(0, 200)
      : `[${ctx.cluster}] ${notifications.length} alerts: ${notifications.map((n) => `${n.phase === 'resolved' ? 'resolved ' : ''}${n.alert.type}`).join(', ')}`.slice(0, 200);
  const blocks = notifications.map((n) => {
    const a: AlertRecord = n.alert;
    const rows = [
      line(n),
      `  alert      ${a.id}`,
      `  opened     ${iso(a.openedAt)}`,
      ...(a.resolvedAt !== undefined ? [`  resolved   ${iso(a.resolvedAt)}`] : []),
      ...(n.phase === 'resolved' ? [`  was        ${a.summary}`] : []),
      ...(a.count > 1 ? [`  times      ${a.count}`] : []),
      ...Object.entries(a.details).map(([k, v]) => `  ${k.padEnd(10)} ${String(v)}`),
    ];
    return rows.join('\n');
  });
  const text = [
    test ? 'This is a test message: the alert channels of this Navigator cluster work.' : `Navigator cluster ${ctx.cluster}, sent by the depot on ${ctx.sender} at ${iso(ctx.now)}.`,
    '',
    ...blocks.flatMap((b) => [b, '']),
    'The tracking page of any depot (port 7480) shows every alert and its delivery.',
    '',
  ].join('\n');
  return { subject, text };
}
