import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { createNode } from '../../depot/libp2p.ts';
import { readSwarmKey, writeSwarmKey } from '../../depot/swarm-key.ts';
import { silentLogger } from '../../shared/logger.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import type { LeaseRenew, VoteRequest } from '../../shared/wire.ts';
import { WITNESS_ID, initialView } from '../../pilot/election/views.ts';
import { DEFAULT_ELECTION_CONFIG } from '../../pilot/election/settings.ts';
import { Voters } from '../../pilot/election/voters.ts';
import { ElectionTransport } from '../../pilot/election/transport.ts';

// `navigator witness` as an admin runs it (bin/navigator.mjs, real libp2p with the swarm key):
// it prints its address, votes like a depot's voter under the id `witness` (quarantine after a
// start, one promise per lease, kept on disk across a restart), and refuses nodes without the key.

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function startWitness(keyFile: string, dataDir: string): Promise<{ proc: ResultPromise; address: string }> {
  const proc = execa(process.execPath, [join(REPO_ROOT, 'bin/navigator.mjs'), 'witness', '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', dataDir, '--swarm-key', keyFile, '--log-level', 'warn'], {
    reject: false,
    env: { NAVIGATOR__network__identityFile: join(dataDir, 'identity.key') },
  });
  cleanup.push(() => {
    proc.kill('SIGKILL');
  });
  const lines = createInterface({ input: proc.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    void proc.then((r) => reject(new Error(`witness exited: ${String(r.stderr).slice(0, 500)}`)));
  });
  const { witness } = JSON.parse(first) as { witness: string[] };
  return { proc, address: witness.find((a) => a.startsWith('/ip4/127.0.0.1/'))! };
}

const vote = (candidate: string, term: number): VoteRequest => ({ type: 'vote-request', v: 1, service: 'svc', term, candidate, syncTime: 0, seq: 1, view: initialView(['peer-a', 'peer-b']) });

/** A depot's election transport, and the pilot id of a copy on it (election messages must name their sender). */
async function client(swarmKey: Uint8Array, witness: string): Promise<ElectionTransport & { pilot: (copy: string) => string }> {
  const node = await createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
  cleanup.push(() => node.stop());
  const dir = mkdtempSync(join(tmpdir(), 'nav-witness-client-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const voters = new Voters({ selfId: node.peerId.toString(), dir, cfg: DEFAULT_ELECTION_CONFIG, now: () => performance.now(), logger: silentLogger() });
  return Object.assign(new ElectionTransport({ node, voters, logger: silentLogger(), timeoutMs: 1000, witness }), { pilot: (copy: string) => `${node.peerId.toString()}/${copy}/1` });
}

describe('navigator witness', () => {
  it('votes over libp2p as `witness`: quiet after a start, one promise per lease, kept across a restart', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nav-witness-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, 'swarm.key');
    await writeSwarmKey(keyFile);
    const dataDir = join(dir, 'data');
    const w = await startWitness(keyFile, dataDir);
    expect(w.address).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+$/);
    const t = await client(await readSwarmKey(keyFile), w.address);
    const cand1 = t.pilot('cand-1');

    // Just started: it may have forgotten a promise, so it keeps quiet for a lease.
    expect(await t.requestWitness(vote(cand1, 1))).toMatchObject({ type: 'vote-reply', voter: WITNESS_ID, granted: false, reason: 'promised' });
    await new Promise((r) => setTimeout(r, DEFAULT_ELECTION_CONFIG.leaseMs + 100));
    expect(await t.requestWitness(vote(cand1, 1))).toMatchObject({ voter: WITNESS_ID, granted: true, term: 1 });
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 'svc', term: 1, holder: cand1, seq: 2, view: initialView(['peer-a', 'peer-b']) };
    expect(await t.requestWitness(renew)).toMatchObject({ type: 'lease-ack', voter: WITNESS_ID, granted: true });
    // The other side of a partition asks too: refused while the promise to cand-1 runs.
    expect(await t.requestWitness(vote(t.pilot('cand-2'), 2))).toMatchObject({ granted: false, reason: 'promised' });
    expect(JSON.parse(readFileSync(join(dataDir, 'witness-votes', 'svc.json'), 'utf8'))).toMatchObject({ votedTerm: 1, promisedTo: cand1 });

    // Power loss and restart: the same identity, and the vote it made is remembered.
    w.proc.kill('SIGKILL');
    await w.proc;
    const again = await startWitness(keyFile, dataDir);
    expect(again.address.split('/p2p/')[1]).toBe(w.address.split('/p2p/')[1]);
    const t2 = await client(await readSwarmKey(keyFile), again.address);
    expect(await t2.requestWitness(vote(t2.pilot('cand-2'), 1))).toMatchObject({ granted: false, reason: 'voted-other' });
    // Quiet for a lease from its first request after the restart, then free to vote again.
    expect(await t2.requestWitness(vote(t2.pilot('cand-2'), 2))).toMatchObject({ granted: false, reason: 'promised' });
    await new Promise((r) => setTimeout(r, DEFAULT_ELECTION_CONFIG.leaseMs + 100));
    expect(await t2.requestWitness(vote(t2.pilot('cand-2'), 2))).toMatchObject({ granted: true, votedTerm: 2 });
  });

  it('a node without the swarm key gets no vote', { timeout: 30_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nav-witness-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, 'swarm.key');
    await writeSwarmKey(keyFile);
    const w = await startWitness(keyFile, join(dir, 'data'));
    const otherKey = join(dir, 'other.key');
    await writeSwarmKey(otherKey);
    const t = await client(await readSwarmKey(otherKey), w.address);
    expect(await t.requestWitness(vote(t.pilot('cand-1'), 1))).toBeUndefined();
    expect(t.counters.failed).toBe(1);
  });
});
