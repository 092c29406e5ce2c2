import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

// Where alert messages land in tests: an HTTP receiver for the webhook (each POST with its
// headers and body) and a tiny SMTP server (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT; no
// TLS) that keeps each mail with the login it came with. Test code only: it accepts anything.

export interface ReceivedPost {
  at: number;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface ReceivedMail {
  at: number;
  from: string;
  to: string[];
  user: string;
  password: string;
  data: string;
}

export class AlertSink {
  readonly posts: ReceivedPost[] = [];
  readonly mails: ReceivedMail[] = [];
  private http: HttpServer | undefined;
  private smtp: TcpServer | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly webhookSockets = new Set<Socket>();
  /** Called for every message received (the lab's sink process prints it). */
  onMessage: ((kind: 'post' | 'mail', m: ReceivedPost | ReceivedMail) => void) | undefined;

  async start(opts: { host: string; httpPort: number; smtpPort: number }): Promise<{ httpPort: number; smtpPort: number }> {
    const httpPort = await this.startWebhook(opts.host, opts.httpPort);
    const smtp = (this.smtp = createTcpServer((s) => this.session(s)));
    await listen(smtp, opts.smtpPort, opts.host);
    return { httpPort, smtpPort: (smtp.address() as AddressInfo).port };
  }

  /** The webhook receiver alone: a receiver that is down (its port refuses connections) and comes back. */
  async stopWebhook(): Promise<void> {
    for (const s of this.webhookSockets) s.destroy();
    const http = this.http;
    this.http = undefined;
    if (http) await new Promise<void>((r) => http.close(() => r()));
  }

  async startWebhook(host: string, port: number): Promise<number> {
    const http = (this.http = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const post: ReceivedPost = {
          at: Date.now(),
          path: req.url ?? '/',
          headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)])),
          body: Buffer.concat(chunks).toString('utf8'),
        };
        this.posts.push(post);
        this.onMessage?.('post', post);
        res.writeHead(204).end();
      });
    }));
    http.on('connection', (s) => {
      this.track(s);
      this.webhookSockets.add(s);
      s.on('close', () => this.webhookSockets.delete(s));
    });
    await listen(http, port, host);
    return (http.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all([this.http, this.smtp].map((srv) => (srv ? new Promise<void>((r) => srv.close(() => r())) : undefined)));
    this.http = this.smtp = undefined;
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
  }

  private session(s: Socket): void {
    this.track(s);
    const say = (line: string) => s.write(`${line}\r\n`);
    let buf = '';
    let mode: 'cmd' | 'data' | 'auth-user' | 'auth-pass' = 'cmd';
    let mail: ReceivedMail = { at: 0, from: '', to: [], user: '', password: '', data: '' };
    let user = '';
    let password = '';
    const b64 = (t: string) => Buffer.from(t, 'base64').toString('utf8');
    say('220 sink ESMTP');
    s.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (mode === 'data') {
          if (line === '.') {
            mode = 'cmd';
            const done = { ...mail, at: Date.now(), user, password };
            this.mails.push(done);
            this.onMessage?.('mail', done);
            say('250 OK queued');
          } else mail.data += `${line.startsWith('..') ? line.slice(1) : line}\n`;
          continue;
        }
        if (mode === 'auth-user') {
          user = b64(line);
          mode = 'auth-pass';
          say(`334 ${Buffer.from('Password:').toString('base64')}`);
          continue;
        }
        if (mode === 'auth-pass') {
          password = b64(line);
          mode = 'cmd';
          say('235 Authentication successful');
          continue;
        }
        const [verb = '', ...rest] = line.split(' ');
        const arg = rest.join(' ');
        switch (verb.toUpperCase()) {
          case 'EHLO':
            say('250-sink');
            say('250-AUTH PLAIN LOGIN');
            say('250 8BITMIME');
            break;
          case 'HELO':
            say('250 sink');
            break;
          case 'AUTH': {
            const [method, initial] = arg.split(' ');
            if (method?.toUpperCase() === 'PLAIN') {
              const parts = b64(initial ?? '').split('\u0000');
              user = parts[1] ?? '';
              password = parts[2] ?? '';
              say('235 Authentication successful');
            } else {
              mode = 'auth-user';
              say(`334 ${Buffer.from('Username:').toString('base64')}`);
            }
            break;
          }
          case 'MAIL':
            mail = { at: 0, from: arg.replace(/^FROM:\s*/i, '').replace(/[<>]/g, '').split(' ')[0] ?? '', to: [], user: '', password: '', data: '' };
            say('250 OK');
            break;
          case 'RCPT':
            mail.to.push(arg.replace(/^TO:\s*/i, '').replace(/[<>]/g, ''));
            say('250 OK');
            break;
          case 'DATA':
            mode = 'data';
            say('354 End data with <CR><LF>.<CR><LF>');
            break;
          case 'QUIT':
            say('221 Bye');
            s.end();
            break;
          default:
            say('250 OK');
        }
      }
    });
    s.on('error', () => undefined);
  }
}

function listen(server: HttpServer | TcpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The alerts of a webhook body or a mail's X-Navigator-Alerts header, as "id status" strings. */
export function alertsIn(kind: 'post' | 'mail', m: ReceivedPost | ReceivedMail): string[] {
  if (kind === 'post') {
    const body = JSON.parse((m as ReceivedPost).body) as { alerts: Array<{ id: string; status: string }> };
    return body.alerts.map((a) => `${a.id} ${a.status}`);
  }
  const header = /^X-Navigator-Alerts:[ \t]*(.*(?:\n[ \t].*)*)$/im.exec((m as ReceivedMail).data)?.[1] ?? '';
  return header
    .replace(/\n[ \t]+/g, ' ')
    .trim()
    .split(' ')
    .filter(Boolean)
    .map((t) => {
      const i = t.lastIndexOf(':');
      return `${t.slice(0, i)} ${t.slice(i + 1) === 'open' ? 'open' : 'resolved'}`;
    });
}
