import { parseArgs } from 'node:util';
import { AlertSink, alertsIn } from './alert-sink.ts';

// The alert sink as a process (lab tests run it in a namespace of the LAN): one JSON line per
// message received, with the alerts it carries ("id status"), the signature header and the login.
const { values } = parseArgs({ options: { host: { type: 'string', default: '0.0.0.0' }, http: { type: 'string', default: '8025' }, smtp: { type: 'string', default: '2525' } } });
const sink = new AlertSink();
sink.onMessage = (kind, m) => {
  const extra = kind === 'post' ? { signature: (m as { headers: Record<string, string> }).headers['x-navigator-signature'] ?? '' } : { user: (m as { user: string }).user };
  process.stdout.write(`${JSON.stringify({ event: 'alert-received', kind, alerts: alertsIn(kind, m), ...extra })}\n`);
};
const ports = await sink.start({ host: values.host, httpPort: Number(values.http), smtpPort: Number(values.smtp) });
process.stdout.write(`${JSON.stringify({ event: 'listening', ...ports })}\n`);
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void sink.stop().then(() => process.exit(0)));
