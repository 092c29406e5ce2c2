import { createConnection, type Socket } from 'node:net';
import { NavigatorError } from '../../../shared/errors.ts';

// A small QMP (QEMU Machine Protocol) client: JSON objects one per line over a unix socket.
// The server greets with {"QMP": ...}; nothing but qmp_capabilities is accepted until the
// client has sent it. Replies are {"return": ...} or {"error": {class, desc}} and carry back
// the request's "id"; asynchronous {"event": ...} lines may arrive in between and are kept
// for callers that wait for one (SHUTDOWN, POWERDOWN).

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const MAX_LINE = 1 << 20;

export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private greeting: ((v: unknown) => void) | undefined;
  private closedError: Error | undefined;
  /** Agent connections: a guest-sync in flight, and the id it must echo. */
  private syncing: { token: number; done: () => void; fail: (err: Error) => void } | undefined;
  readonly events: QmpEvent[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new NavigatorError('DRIVER_FAILED', 'QMP connection closed')));
  }

  /**
   * Connect, read the greeting and negotiate capabilities. `agent: true` speaks to
   * qemu-guest-agent instead, which has the same framing but no greeting or handshake.
   */
  static async connect(path: string, opts: { timeoutMs?: number; agent?: boolean } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const socket = createConnection({ path });
    const client = new QmpClient(socket);
    if (opts.agent) {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('error', reject);
      });
      try {
        await client.syncAgent(timeoutMs);
      } catch (err) {
        socket.destroy();
        throw err;
      }
      return client;
    }
    const timer = setTimeout(() => socket.destroy(new NavigatorError('TIMEOUT', `no QMP greeting on ${path} within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        client.greeting = () => resolve();
        socket.once('error', reject);
        socket.once('close', () => reject(client.closedError ?? new NavigatorError('DRIVER_FAILED', `QMP socket ${path} closed before the greeting`)));
      });
      await client.execute('qmp_capabilities', undefined, timeoutMs);
      return client;
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The guest agent's channel outlives a connection: a reply to an earlier connection's command
   * (one that timed out, or whose client closed first) can still be in it, and the agent does not
   * echo ids, so it would be taken as the answer to this connection's first command. guest-sync
   * with a fresh random id, and every line before its echo dropped, starts the channel clean.
   */
  private syncAgent(timeoutMs: number): Promise<void> {
    const token = Math.floor(Math.random() * 2 ** 31);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.syncing = undefined;
        reject(new NavigatorError('TIMEOUT', `guest agent: no answer to guest-sync within ${timeoutMs} ms`));
      }, timeoutMs);
      this.syncing = {
        token,
        done: () => {
          clearTimeout(timer);
          this.syncing = undefined;
          resolve();
        },
        fail: (err) => {
          clearTimeout(timer);
          this.syncing = undefined;
          reject(err);
        },
      };
      this.socket.write(`${JSON.stringify({ execute: 'guest-sync', arguments: { id: token } })}\n`);
    });
  }

  /** Run one command; resolves with its "return" value, rejects with its "error". */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new NavigatorError('TIMEOUT', `QMP ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      const msg = args ? { execute: command, arguments: args, id } : { execute: command, id };
      this.socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE) {
      this.socket.destroy(new NavigatorError('DRIVER_FAILED', 'QMP line too long'));
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ('QMP' in msg) {
      this.greeting?.(msg.QMP);
      this.greeting = undefined;
      return;
    }
    if (this.syncing) {
      if (msg.return === this.syncing.token) this.syncing.done();
      return;
    }
    if (typeof msg.event === 'string') {
      this.events.push(msg as unknown as QmpEvent);
      if (this.events.length > 100) this.events.shift();
      return;
    }
    // The guest agent may not echo ids; it answers one command at a time, so take the oldest.
    const id = typeof msg.id === 'string' ? msg.id : this.pending.keys().next().value;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new NavigatorError('DRIVER_FAILED', `QMP error ${e.class ?? ''}: ${e.desc ?? 'unknown'}`));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    if (!this.closedError) this.closedError = err;
    this.syncing?.fail(err);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }
}
