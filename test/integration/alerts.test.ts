import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID, createHmac } from 'node:crypto';
import { Writable } from 'node:stream';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { trackingPlugin } from '../../plugins/tracking.ts';
import { alertsPlugin, type AlertsPlugin } from '../../plugins/alerts.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { movementMessage } from '../../depot/journal/movement-gossip.ts';
import { parseConfig } from '../../shared/config.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';
import { TOPICS, type ContainerReport } from '../../shared/wire.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import type { AlertsResponse } from '../../shared/alert.ts';
import { AlertSink, alertsIn } from '../../lab/alert-sink.ts';
import { execa } from 'execa';
import { REPO_ROOT } from '../../shared/repo-root.ts';

// Three real depots in one process (TCP on loopback, gossip, control, HTTP) with the tracking and
// alerts plugins, and a webhook receiver and an SMTP server started by the test. The copies the
// depots report are set by the test (a stand-in for the containers plugin), so each alert
// condition can be made and cleared at will; failovers come through the journal, the rest
// through notices (a real image verification failure among them). Checked: every event type
// gives exactly one message per channel cluster-wide, its resolve follows, a webhook that was down
// gets its message once it is back, and neither the SMTP password nor the HMAC key is ever logged.

const swarmKey = makeSwarmKey();
const SECRET = `hmac-${randomUUID()}`;
const PASSWORD = `smtp-${randomUUID()}`;
const dirs: string[] = [];
const depots: Depot[] = [];
const logLines: string[] = [];
const sink = new AlertSink();
let ports = { httpPort: 0, smtpPort: 0 };
let root = '';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-alerts-'));
  dirs.push(root);
  await writeFile(join(root, 'hmac.key'), `${SECRET}\n`);
  await writeFile(join(root, 'smtp.password'), `${PASSWORD}\n`);
  ports = await sink.start({ host: '127.0.0.1', httpPort: 0, smtpPort: 0 });
});

afterAll(async () => {
  for (const d of depots) await d.stop().catch(() => undefined);
  await sink.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Node {
  name: string;
  depot: Depot;
  alerts: AlertsPlugin;
  journal: Journal;
  copies: ContainerReport[];
  api: string;
}

async function startNode(name: string, root: string, bootstrap: string[]): Promise<Node> {
  const dataDir = join(root, name);
  const config = parseConfig({
    node: { name, dataDir },
    network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
    http: { host: '127.0.0.1', port: 0 },
    membership: { heartbeatMs: 300 },
    journal: { initialFillWindowMs: 3000 },
    alerts: {
      clusterName: 'lab',
      webhookUrl: `http://127.0.0.1:${ports.httpPort}/hook`,
      webhookSecretFile: join(root, 'hmac.key'),
      mailTo: ['admin@lab.example'],
      mailFrom: 'navigator@lab.example',
      smtpHost: '127.0.0.1',
      smtpPort: ports.smtpPort,
      smtpUser: 'navigator',
      smtpPasswordFile: join(root, 'smtp.password'),
      downAfterMs: 1000,
      unprotectedAfterMs: 1000,
      syncFailingAfterMs: 1000,
      syncLagMs: 8000,
      quorumLostAfterMs: 500,
      resolveAfterMs: 1500,
      eventQuietMs: 4000,
      senderSettleMs: 1000,
      retryBaseMs: 500,
      retryMaxMs: 1000,
      maxPerHour: 1000,
    },
  });
  // Every line any depot logs, at debug level: the secrets must be in none.
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  });
  const log = createLogger({ level: 'debug', destination });
  const journal = new Journal({ path: join(dataDir, 'journal.jsonl'), logger: silentLogger() });
  const copies: ContainerReport[] = [];
  let alerts: AlertsPlugin | undefined;
  const depot = new Depot({
    config,
    log,
    swarmKey,
    plugins: [
      trackingPlugin({ journal }),
      // Stand-in for the containers plugin: the copies this depot reports.
      (c) => ({ name: 'copies', start: () => c.heartbeat.contribute(() => ({ containers: copies.map((x) => ({ ...x })) })), stop: () => undefined }),
      (c) => (alerts = alertsPlugin({ journal })(c)),
    ],
  });
  await depot.start();
  depots.push(depot);
  return { name, depot, alerts: alerts!, journal, copies, api: `http://127.0.0.1:${depot.httpPort}` };
}

const report = (over: Partial<ContainerReport>): ContainerReport => ({ id: 'c1', service: 'zabbix', driver: 'process', state: 'running', role: 'standby', term: 1, image: '', syncFailing: false, ...over });

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every (channel, alert id, status) received so far. */
function received(): Array<{ channel: 'webhook' | 'mail'; id: string; status: string }> {
  return [
    ...sink.posts.flatMap((p) => alertsIn('post', p).map((s) => ({ channel: 'webhook' as const, id: s.split(' ')[0]!, status: s.split(' ')[1]! }))),
    ...sink.mails.flatMap((m) => alertsIn('mail', m).map((s) => ({ channel: 'mail' as const, id: s.split(' ')[0]!, status: s.split(' ')[1]! }))),
  ];
}

/** Wait until both channels got `status` for an alert of `type`; returns its id. */
async function got(type: string, status: 'open' | 'resolved', channels: Array<'webhook' | 'mail'> = ['webhook', 'mail'], timeoutMs = 20_000): Promise<string> {
  return waitFor(
    `${type} ${status} on ${channels.join(' and ')}`,
    () => {
      const r = received().filter((x) => x.id.startsWith(`${type}/`) && x.status === status);
      const ids = [...new Set(r.map((x) => x.id))];
      return ids.find((id) => channels.every((ch) => r.some((x) => x.id === id && x.channel === ch)));
    },
    timeoutMs,
  );
}

const alertsOf = async (api: string) => (await (await fetch(`${api}/api/alerts`)).json()) as AlertsResponse;

describe('alerts on three real depots', () => {
  it('every event type: one message per channel cluster-wide, then its resolve; a webhook that was down gets it once back; no secret logged', async () => {
    const a = await startNode('ws-a', root, []);
    const bootstrap = [a.depot.node.getMultiaddrs()[0]!.toString()];
    const b = await startNode('ws-b', root, bootstrap);
    const c = await startNode('ws-c', root, bootstrap);
    const nodes = [a, b, c];
    const beat = () => nodes.forEach((n) => n.depot.components.heartbeat.beat());
    const fresh = () => Date.now() - 500;
    // A protected service: primary on a, standby on b.
    a.copies.push(report({ role: 'primary' }));
    b.copies.push(report({ lastSyncAt: fresh() }));
    const keepFresh = setInterval(() => {
      for (const n of nodes) for (const x of n.copies) if (x.role === 'standby' && x.lastSyncAt !== undefined && x.lastSyncAt > Date.now() - 5000) x.lastSyncAt = fresh();
    }, 300);
    try {
      beat();
      await waitFor('a to send the alerts', async () => (await alertsOf(a.api)).sender.sending);
      // b and c learn of a's primary from its heartbeat, which may reach them a moment later.
      for (const n of [b, c]) await waitFor(`${n.depot.components.self.name} to see ws-a as the sender`, async () => (await alertsOf(n.api)).sender.name === 'ws-a');
      for (const n of [b, c]) expect((await alertsOf(n.api)).sender).toMatchObject({ name: 'ws-a', self: false, sending: false });

      // unprotected: the standby's copy fails, then runs again.
      b.copies[0]!.state = 'failed';
      beat();
      await got('unprotected', 'open');
      b.copies[0]!.state = 'running';
      beat();
      await got('unprotected', 'resolved');

      // sync-failing, then sync-lagging (a copy older than syncLagMs).
      b.copies[0]!.syncFailing = true;
      beat();
      await got('sync-failing', 'open');
      b.copies[0]!.syncFailing = false;
      beat();
      await got('sync-failing', 'resolved');
      b.copies[0]!.lastSyncAt = Date.now() - 20_000;
      beat();
      await got('sync-lagging', 'open');
      b.copies[0]!.lastSyncAt = fresh();
      beat();
      await got('sync-lagging', 'resolved');

      // failover while the webhook receiver is down: a dies, b is primary in term 2, with the
      // failover recorded in b's journal and gossiped. The new sender (b) alerts once; mail gets
      // it at once, the webhook once it is back; the failures show on /api/alerts meanwhile.
      await sink.stopWebhook();
      b.copies[0] = report({ role: 'primary', term: 2 });
      beat();
      await a.depot.crash();
      const record: MovementRecord = {
        id: randomUUID(),
        time: Date.now(),
        service: 'zabbix',
        role: 'primary',
        host: 'ws-b',
        address: '10.0.0.50',
        fromHost: 'ws-a',
        event: 'failover',
        failover: true,
        reason: 'ws-a stopped answering',
        term: 2,
        timings: { detect: 900, elect: 200, takeover: 150 },
      };
      await b.journal.append(record);
      await b.depot.publish(TOPICS.events, movementMessage(record));
      await got('failover', 'open', ['mail']);
      const failing = await waitFor('the webhook failures on /api/alerts', async () => {
        const res = await alertsOf(b.api);
        const hook = res.channels.find((ch) => ch.channel === 'webhook');
        return res.sender.name === 'ws-b' && res.sender.sending && hook && hook.failures > 0 && hook.pending > 0 ? hook : undefined;
      });
      expect(failing.lastError).toMatch(/ECONNREFUSED/);
      await sink.startWebhook('127.0.0.1', ports.httpPort);
      await got('failover', 'open', ['webhook']);
      // Protected again: a standby on c.
      c.copies.push(report({ lastSyncAt: fresh() }));
      beat();
      await got('failover', 'resolved');

      // service-down: the primary's copy fails, then runs again.
      b.copies[0]!.state = 'failed';
      beat();
      await got('service-down', 'open');
      b.copies[0]!.state = 'running';
      beat();
      await got('service-down', 'resolved');

      // Notices from a depot that does not send (c): voter quorum lost and back, a refused peer
      // three times (one alert), a last-resort recovery (hook for the recovery of issue 18).
      const quorum = (active: boolean) => c.depot.notices.report({ kind: 'quorum', service: 'zabbix', active, summary: active ? 'zabbix has 1 of 3 voters alive, 2 needed' : 'zabbix has 3 of 3 voters alive' });
      quorum(true);
      await got('quorum-lost', 'open');
      quorum(false);
      await got('quorum-lost', 'resolved');
      for (let i = 0; i < 3; i++) {
        c.depot.notices.report({ kind: 'peer-refused', subject: '12D3KooWAttacker', summary: `control call pilot.assign from 12D3KooWAttacker refused (${i})`, details: { method: 'pilot.assign' } });
        await new Promise((r) => setTimeout(r, 50));
      }
      const refusedId = await got('peer-refused', 'open');
      c.depot.notices.report({ kind: 'last-resort-recovery', service: 'zabbix', subject: 'zabbix', summary: 'every copy of zabbix was lost; started on ws-c from the database copy of 10:41:07 (data of 10:41:07-10:43:30 lost)', details: { lostFrom: '10:41:07', lostTo: '10:43:30' } });
      await got('last-resort-recovery', 'open');
      await got('last-resort-recovery', 'resolved');
      await got('peer-refused', 'resolved');

      // A real image verification failure on c: a stored image with a damaged file.
      const store = new ImageStore({
        dir: join(root, 'store-c'),
        keepVersions: 2,
        logger: silentLogger(),
        onVerifyFailed: (f) => c.depot.notices.report({ kind: 'image-verify-failed', subject: f.id, summary: `stored image ${f.name} failed verification on ws-c (${f.first})`, details: { image: f.id } }),
      });
      await store.start();
      const src = join(root, 'image-src');
      await mkdir(src, { recursive: true });
      await writeFile(join(src, 'container.yaml'), 'name: demo\n');
      const id = await store.import(src, 'demo');
      const files = join(root, 'store-c', 'images', id, 'files');
      expect(await readdir(files)).toContain('container.yaml');
      await writeFile(join(files, 'container.yaml'), 'name: tampered\n');
      expect((await store.verify(id)).ok).toBe(false);
      await store.stop();
      await got('image-verify-failed', 'open');
      await got('image-verify-failed', 'resolved');

      // Exactly one open and one resolve per alert and channel, from the whole cluster.
      await new Promise((r) => setTimeout(r, 1500));
      const all = received();
      const byKey = new Map<string, number>();
      for (const x of all) byKey.set(`${x.channel} ${x.id} ${x.status}`, (byKey.get(`${x.channel} ${x.id} ${x.status}`) ?? 0) + 1);
      expect([...byKey.entries()].filter(([, n]) => n !== 1)).toEqual([]);
      const types = new Set(all.map((x) => x.id.split('/')[0]));
      expect([...types].sort()).toEqual(['failover', 'image-verify-failed', 'last-resort-recovery', 'peer-refused', 'quorum-lost', 'service-down', 'sync-failing', 'sync-lagging', 'unprotected']);
      for (const ch of ['webhook', 'mail'] as const) {
        const ids = new Set(all.filter((x) => x.channel === ch).map((x) => x.id));
        for (const id of ids) expect(all.filter((x) => x.channel === ch && x.id === id).map((x) => x.status).sort(), `${ch} ${id}`).toEqual(['open', 'resolved']);
      }
      // The three refusals are one alert (the notice bus passes a storm on once; the engine joins repeats).
      expect((await alertsOf(c.api)).alerts.filter((x) => x.key === 'peer-refused/12D3KooWAttacker').map((x) => x.id)).toEqual([refusedId]);
      // Every depot holds the same table.
      const tables = await Promise.all([b, c].map(async (n) => (await alertsOf(n.api)).alerts.map((x) => `${x.id} ${x.resolvedAt !== undefined} ${x.sentOpen} ${x.sentResolve}`).sort()));
      expect(tables[0]).toEqual(tables[1]);

      // Signed webhooks; mail logged in with the password from its file; no secret in any log line.
      for (const p of sink.posts) expect(p.headers['x-navigator-signature']).toBe(`sha256=${createHmac('sha256', SECRET).update(p.body).digest('hex')}`);
      expect(new Set(sink.mails.map((m) => `${m.user}:${m.password}`))).toEqual(new Set([`navigator:${PASSWORD}`]));
      expect(logLines.length).toBeGreaterThan(100);
      expect(logLines.filter((l) => l.includes(PASSWORD) || l.includes(SECRET))).toEqual([]);
      expect(logLines.some((l) => l.includes('"alert-sent"'))).toBe(true);
    } catch (err) {
      if (process.env.ALERTS_DEBUG) for (const l of logLines) if (l.includes('"component":"alerts"') || l.includes('alert')) process.stderr.write(l);
      throw err;
    } finally {
      clearInterval(keepFresh);
    }
  }, 150_000);

  it('navigator alerts test sends a test message through each channel of a configuration file', async () => {
    const file = join(root, 'navigator.yaml');
    await writeFile(
      file,
      [
        'alerts:',
        '  clusterName: lab',
        `  webhookUrl: http://127.0.0.1:${ports.httpPort}/hook`,
        `  webhookSecretFile: ${join(root, 'hmac.key')}`,
        '  mailTo: [admin@lab.example]',
        '  smtpHost: 127.0.0.1',
        `  smtpPort: ${ports.smtpPort}`,
        '  smtpUser: navigator',
        `  smtpPasswordFile: ${join(root, 'smtp.password')}`,
        '',
      ].join('\n'),
    );
    const posts = sink.posts.length;
    const mails = sink.mails.length;
    const r = await execa(process.execPath, [join(REPO_ROOT, 'bin/navigator.mjs'), 'alerts', 'test', '--config', file], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/webhook \(http:\/\/127\.0\.0\.1:\d+\/hook\): sent/);
    expect(r.stdout).toMatch(/mail \(admin@lab\.example via 127\.0\.0\.1:\d+\): sent/);
    expect(`${r.stdout}${r.stderr}`).not.toContain(PASSWORD);
    expect(JSON.parse(sink.posts[posts]!.body)).toMatchObject({ version: 1, cluster: 'lab', test: true, alerts: [] });
    expect(sink.mails[mails]!.data).toContain('test message');
    // A receiver that is down: a clear error and exit code 1.
    await sink.stopWebhook();
    const down = await execa(process.execPath, [join(REPO_ROOT, 'bin/navigator.mjs'), 'alerts', 'test', '--config', file], { reject: false });
    expect(down.exitCode).toBe(1);
    expect(down.stdout).toMatch(/webhook .*FAILED: POST .*ECONNREFUSED/);
    await sink.startWebhook('127.0.0.1', ports.httpPort);
  }, 60_000);
});
