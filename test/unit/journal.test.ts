import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm, readFile, writeFile, appendFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Journal, parseJournalText } from '../../depot/journal/journal.ts';
import { JournalGapFill } from '../../depot/journal/gap-fill.ts';
import { publishMovement, subscribeMovements } from '../helpers/movement-gossip.ts';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { silentLogger } from '../../shared/logger.ts';
import { failoverSummaries, type MovementRecord } from '../../shared/movement.ts';
import { MovementMessage, TOPICS, decodeMessage, encodeMessage } from '../../shared/wire.ts';

const log = silentLogger();
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nav-journal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
function rec(over: Partial<MovementRecord> = {}): MovementRecord {
  n++;
  return {
    id: over.id ?? randomUUID(),
    time: 1_700_000_000_000 + n * 1000,
    service: 'zabbix',
    role: 'primary',
    host: 'ws-01',
    address: '10.0.0.50',
    fromHost: '',
    event: 'placed',
    failover: false,
    reason: 'test',
    term: 1,
    timings: {},
    ...over,
  };
}

async function openJournal(name = 'journal.jsonl'): Promise<Journal> {
  const j = new Journal({ path: join(dir, name), logger: log });
  await j.open();
  return j;
}

describe('Journal', () => {
  it('appends, ignores duplicate ids, and survives reopen (fsync\'d lines)', async () => {
    const j = await openJournal();
    const a = rec();
    expect(await j.append(a)).toBe(true);
    expect(await j.append({ ...a, reason: 'changed' })).toBe(false);
    // Concurrent duplicates: only one is written.
    const b = rec();
    const results = await Promise.all([j.append(b), j.append(b), j.append(b)]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(j.size).toBe(2);
    await j.close();
    const lines = (await readFile(join(dir, 'journal.jsonl'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(2);
    const again = await openJournal();
    expect(again.size).toBe(2);
    expect(again.get(a.id)?.reason).toBe('test');
    expect(await again.append(a)).toBe(false);
    await again.close();
  });

  it('emits each new record once with its sequence number', async () => {
    const j = await openJournal();
    const seen: Array<[string, number]> = [];
    j.on('movement', (r, seq) => seen.push([r.id, seq]));
    const a = rec();
    const b = rec();
    await j.append(a);
    await j.append(a);
    await j.append(b);
    expect(seen).toEqual([
      [a.id, 1],
      [b.id, 2],
    ]);
    await j.close();
  });

  it('refuses a bad record naming the field, writing nothing', async () => {
    const j = await openJournal();
    await expect(j.append({ ...rec(), event: 'exploded' as never })).rejects.toThrow(/event/);
    await expect(j.append({ ...rec(), id: 'has space' })).rejects.toThrow(/id/);
    await expect(j.append({ ...rec(), timings: { detect: -1 } })).rejects.toThrow(/timings\.detect/);
    expect(j.size).toBe(0);
    await j.close();
    expect((await stat(join(dir, 'journal.jsonl'))).size).toBe(0);
  });

  it('cuts off a torn last line from a crash and keeps the rest', async () => {
    const path = join(dir, 'journal.jsonl');
    const a = rec();
    const b = rec();
    const good = `${JSON.stringify(a)}\n${JSON.stringify(b)}\n`;
    await writeFile(path, `${good}${JSON.stringify(rec()).slice(0, 40)}`);
    const j = await openJournal();
    expect(j.size).toBe(2);
    expect(await readFile(path, 'utf8')).toBe(good);
    // Appends go after the cut, so the file is clean again.
    const c = rec();
    await j.append(c);
    await j.close();
    const j2 = await openJournal();
    expect(j2.all().map((r) => r.id)).toEqual([a.id, b.id, c.id]);
    await j2.close();
  });

  it('treats a garbage last line (e.g. zero-filled block) as torn', async () => {
    const path = join(dir, 'journal.jsonl');
    const a = rec();
    await writeFile(path, `${JSON.stringify(a)}\n\0\0\0\0\n`);
    const j = await openJournal();
    expect(j.size).toBe(1);
    expect(await readFile(path, 'utf8')).toBe(`${JSON.stringify(a)}\n`);
    await j.close();
  });

  it('refuses to open a journal damaged in the middle, naming the line', async () => {
    const path = join(dir, 'journal.jsonl');
    await writeFile(path, `${JSON.stringify(rec())}\n{"broken":\n${JSON.stringify(rec())}\n`);
    const j = new Journal({ path, logger: log });
    await expect(j.open()).rejects.toThrow(/line 2 of 3/);
    // Not truncated: the admin decides.
    expect((await readFile(path, 'utf8')).split('\n')).toHaveLength(4);
    expect(() => parseJournalText(`${JSON.stringify({ ...rec(), term: -1 })}\n${JSON.stringify(rec())}\n`)).toThrow(/line 1/);
  });

  it('pages newest first with filters and a stable cursor, even with out-of-order arrival', async () => {
    const j = await openJournal();
    const base = 1_800_000_000_000;
    const all: MovementRecord[] = [];
    for (let i = 0; i < 57; i++) {
      all.push(
        rec({
          time: base + (i % 10 === 0 ? 5000 : i * 1000), // several records share a time
          service: i % 3 === 0 ? 'db' : 'zabbix',
          host: `ws-0${i % 4}`,
          fromHost: i % 5 === 0 ? 'ws-09' : '',
          event: i % 2 === 0 ? 'failover' : 'replaced',
        }),
      );
    }
    // Appended in a shuffled order (gap filling delivers old records late).
    const shuffled = [...all].sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const r of shuffled) await j.append(r);
    const expected = [...all].sort((a, b) => b.time - a.time || (a.id < b.id ? 1 : -1));

    const collect = (q: Parameters<Journal['page']>[0]) => {
      const out: MovementRecord[] = [];
      let before: string | undefined;
      let pages = 0;
      do {
        const p = j.page({ ...q, before });
        out.push(...p.records);
        before = p.nextBefore ?? undefined;
        pages++;
        expect(pages).toBeLessThan(100);
      } while (before);
      return out;
    };
    expect(collect({ limit: 10 }).map((r) => r.id)).toEqual(expected.map((r) => r.id));
    expect(j.page({ limit: 10 }).total).toBe(57);
    const f = { service: 'zabbix', event: 'failover' as const, limit: 4 };
    const want = expected.filter((r) => r.service === 'zabbix' && r.event === 'failover');
    expect(collect(f).map((r) => r.id)).toEqual(want.map((r) => r.id));
    expect(j.page(f).total).toBe(want.length);
    // host matches the host the copy is on or the one it came from.
    expect(collect({ host: 'ws-09', limit: 3 }).map((r) => r.id)).toEqual(expected.filter((r) => r.fromHost === 'ws-09').map((r) => r.id));
    // A numeric `before` is a time: strictly older records only.
    expect(j.page({ before: base + 5000, limit: 500 }).records.every((r) => r.time < base + 5000)).toBe(true);
    expect(j.page({ limit: 500 }).nextBefore).toBeNull();
    expect(() => j.page({ before: 'drop table' })).toThrow(/before/);
    await j.close();
  });

  it('since() filters by local sequence and record time', async () => {
    const j = await openJournal();
    const rs = [rec({ time: 100 }), rec({ time: 50 }), rec({ time: 300 })];
    for (const r of rs) await j.append(r);
    expect(j.since({ afterSeq: 1 }).map((e) => e.seq)).toEqual([2, 3]);
    expect(j.since({ sinceTime: 100 }).map((e) => e.record.time)).toEqual([100, 300]);
    expect(j.newestTime).toBe(300);
    await j.close();
  });

  it('fills gaps from a peer through an injected fetch, in several pages, duplicates ignored', async () => {
    const a = await openJournal('a.jsonl');
    const b = await openJournal('b.jsonl');
    const t0 = 1_900_000_000_000;
    // Both saw the early history; then b was down while a got 600 more records.
    for (let i = 0; i < 20; i++) {
      const r = rec({ time: t0 + i });
      await a.append(r);
      await b.append(r);
    }
    const missed: MovementRecord[] = [];
    for (let i = 0; i < 600; i++) missed.push(rec({ time: t0 + 10_000 + i }));
    for (const r of missed) await a.append(r);
    const requests: unknown[] = [];
    const res = await b.fillGaps(async (req) => {
      requests.push(req);
      return JSON.parse(JSON.stringify(a.handleFetch(req)));
    });
    expect(res.added).toBe(600);
    expect(res.pages).toBeGreaterThanOrEqual(3);
    expect(b.size).toBe(620);
    expect(new Set(b.all().map((r) => r.id))).toEqual(new Set(a.all().map((r) => r.id)));
    // It asked only from its newest time minus slack.
    expect((requests[0] as { sinceTime: number }).sinceTime).toBe(t0 + 19 - 5 * 60_000);
    // A second run adds nothing.
    expect((await b.fillGaps(async (req) => a.handleFetch(req))).added).toBe(0);
    // Bad answers are refused with a clear error.
    await expect(b.fillGaps(async () => ({ type: 'journal.records', v: 1, records: [{ id: 'x' }], lastSeq: 1, more: false }))).rejects.toThrow(/records\.0/);
    expect(() => a.handleFetch({ sinceTime: 'yesterday' })).toThrow(/sinceTime/);
    await a.close();
    await b.close();
  });

  it('summarises failovers: outage and re-protection', () => {
    const t = 2_000_000_000_000;
    const s = failoverSummaries([
      rec({ id: 'f1', time: t, event: 'failover', failover: true, timings: { detect: 900, elect: 300, takeover: 200 } }),
      rec({ id: 'r1', time: t + 5000, event: 'replaced', role: 'standby', timings: { ship: 3000, boot: 1000 } }),
      rec({ id: 'f2', time: t + 9000, event: 'failover', failover: true, timings: { detect: 1000 } }),
    ]);
    expect(s).toEqual([
      expect.objectContaining({ id: 'f1', outageMs: 1400, reprotectMs: 6400 }),
      expect.objectContaining({ id: 'f2', outageMs: 1000, reprotectMs: null }),
    ]);
  });
});

describe('Journal over libp2p', () => {
  it('gossips movements live; a depot restarted after being down fills its gaps over /navigator/journal/1', async () => {
    const swarmKey = makeSwarmKey();
    const nodes: NavigatorNode[] = [];
    const journals: Journal[] = [];
    const waitFor = async (cond: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const mk = async () => {
      const node = await createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false });
      nodes.push(node);
      return node;
    };
    const open = async (name: string) => {
      const j = await openJournal(name);
      journals.push(j);
      return j;
    };
    const subscribed = (from: NavigatorNode, to: NavigatorNode) => from.services.pubsub.getSubscribers(TOPICS.events).some((p) => p.equals(to.peerId));
    try {
      const nodeA = await mk();
      const a = await open('a.jsonl');
      await new JournalGapFill({ node: nodeA, journal: a, logger: log }).start();
      subscribeMovements(nodeA, a, { logger: log });

      // B is up and receives gossip live.
      let nodeB = await mk();
      let b = await open('b.jsonl');
      const counts: string[] = [];
      subscribeMovements(nodeB, b, { logger: log, count: (r) => counts.push(r) });
      await nodeB.dial(nodeA.getMultiaddrs()[0]!);
      await waitFor(() => subscribed(nodeA, nodeB), 'subscription to propagate');
      const early = rec({ time: 2_100_000_000_000 - 1 });
      await publishMovement(nodeA, early);
      await a.append(early);
      await waitFor(() => b.get(early.id) !== undefined && counts.includes('appended'), 'the gossiped movement');
      // A bad message on the topic is counted and dropped; the daemon goes on.
      await nodeA.services.pubsub.publish(TOPICS.events, new TextEncoder().encode('{"type":"movement","v":1,"record":{"id":"x"}}'));
      await waitFor(() => counts.includes('bad'), 'the bad message to be counted');
      expect(counts).toContain('appended');

      // B goes down (node stopped, journal closed); A keeps recording.
      await nodeB.stop();
      await b.close();
      const missed = Array.from({ length: 300 }, (_, i) => rec({ time: 2_100_000_000_000 + i }));
      await a.appendMany(missed);

      // B restarts: new node, journal reopened from its file, then fills the gap from A.
      b = await open('b.jsonl');
      expect(b.size).toBe(1);
      nodeB = await mk();
      const gapFillB = new JournalGapFill({ node: nodeB, journal: b, logger: log });
      await gapFillB.start();
      subscribeMovements(nodeB, b, { logger: log });
      await nodeB.dial(nodeA.getMultiaddrs()[0]!);
      const filled = await gapFillB.fillFromPeers([nodeA.peerId]);
      expect(filled).toMatchObject({ added: 300, peer: nodeA.peerId.toString() });
      expect(filled.pages).toBeGreaterThanOrEqual(2);
      expect(new Set(b.all().map((r) => r.id))).toEqual(new Set(a.all().map((r) => r.id)));
      // A peer that does not serve the protocol is skipped for the next one.
      const nodeC = await mk();
      await nodeB.dial(nodeC.getMultiaddrs()[0]!);
      const again = await gapFillB.fillFromPeers([nodeC.peerId, nodeA.peerId]).catch((e) => e);
      expect(again).toMatchObject({ peer: nodeA.peerId.toString() });

      // Durable: the filled records are in B's file.
      await b.close();
      b = await open('b.jsonl');
      expect(b.size).toBe(301);
      // The encoded message is the documented wire message.
      expect(decodeMessage(MovementMessage, encodeMessage({ type: 'movement', v: 1, record: early })).ok).toBe(true);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const j of journals) await j.close();
    }
  });
});
