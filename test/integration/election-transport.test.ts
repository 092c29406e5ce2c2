import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lp from 'it-length-prefixed';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { silentLogger } from '../../shared/logger.ts';
import { ELECTION_PROTOCOL, type VoteRequest } from '../../shared/wire.ts';
import { initialView } from '../../pilot/election/views.ts';
import { DEFAULT_ELECTION_CONFIG } from '../../pilot/election/settings.ts';
import { Voters } from '../../pilot/election/voters.ts';
import { ElectionTransport } from '../../pilot/election/transport.ts';
import { hostAddressOf } from '../../depot/host-address.ts';

// Votes over real libp2p streams: the voter's promise is on disk before the reply leaves, a
// restarted voter stays silent for a lease, and garbage on the protocol is dropped.

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function voterNode(key: Uint8Array, dir: string, now: () => number) {
  const node = await createNode({ swarmKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] });
  const voters = new Voters({ selfId: node.peerId.toString(), dir, cfg: DEFAULT_ELECTION_CONFIG, now, logger: silentLogger() });
  await voters.start();
  const transport = new ElectionTransport({ node, voters, logger: silentLogger(), timeoutMs: 1000 });
  await transport.start();
  cleanup.push(() => node.stop());
  return { node, voters, transport };
}

function request(candidate: string, voter: string, term: number): VoteRequest {
  return { type: 'vote-request', v: 1, service: 'svc', term, candidate, syncTime: 0, seq: 1, view: initialView([voter]) };
}

describe('election transport and voters', () => {
  it('grants over libp2p, persists the promise, and a restarted voter keeps quiet for a lease', async () => {
    const key = makeSwarmKey();
    const dir = mkdtempSync(join(tmpdir(), 'nav-voters-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    let clock = 1_000_000;
    const now = () => clock;
    const a = await voterNode(key, dir, now);
    const b = await voterNode(key, mkdtempSync(join(tmpdir(), 'nav-voters-')), now);
    await b.node.dial(a.node.getMultiaddrs()[0]!);
    const voterId = a.node.peerId.toString();
    // Pilot ids name their depot: `<peer id>/<copy>/<incarnation>`.
    const cand1 = `${b.node.peerId}/cand-1/1`;

    // A fresh voter is quarantined for leaseMs (it may have lost a promise in a crash).
    const early = await b.transport.request(voterId, request(cand1, voterId, 1));
    expect(early).toMatchObject({ type: 'vote-reply', granted: false, reason: 'promised' });
    clock += DEFAULT_ELECTION_CONFIG.leaseMs;
    const granted = await b.transport.request(voterId, request(cand1, voterId, 1));
    expect(granted).toMatchObject({ type: 'vote-reply', granted: true, voter: voterId, term: 1 });
    const onDisk = JSON.parse(readFileSync(join(dir, 'svc.json'), 'utf8'));
    expect(onDisk).toMatchObject({ votedTerm: 1, promisedTo: cand1 });
    // Another candidate in a later term is refused while the promise runs.
    expect(await b.transport.request(voterId, request(`${b.node.peerId}/cand-2/1`, voterId, 2))).toMatchObject({ granted: false, reason: 'promised' });

    // The voter restarts: it reloads its vote and is silent for a lease even though time passed.
    const restarted = new Voters({ selfId: voterId, dir, cfg: DEFAULT_ELECTION_CONFIG, now, logger: silentLogger() });
    clock += 10 * DEFAULT_ELECTION_CONFIG.leaseMs;
    expect(await restarted.receive(request('cand-2', voterId, 1))).toMatchObject({ granted: false, reason: 'voted-other' });
    expect(await restarted.receive(request('cand-2', voterId, 2))).toMatchObject({ granted: false, reason: 'promised' });
    clock += DEFAULT_ELECTION_CONFIG.leaseMs;
    expect(await restarted.receive(request('cand-2', voterId, 2))).toMatchObject({ granted: true });
  });

  it('drops malformed requests and keeps serving', async () => {
    const key = makeSwarmKey();
    const dir = mkdtempSync(join(tmpdir(), 'nav-voters-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    let clock = 5_000_000;
    const a = await voterNode(key, dir, () => clock);
    const client: NavigatorNode = await createNode({ swarmKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] });
    cleanup.push(() => client.stop());
    for (const junk of [new TextEncoder().encode('{"type":"vote-request"'), new TextEncoder().encode('{"type":"vote-reply","v":1}')]) {
      const stream = await client.dialProtocol(a.node.getMultiaddrs()[0]!, ELECTION_PROTOCOL);
      await stream.sink([lp.encode.single(junk).subarray()]).catch(() => undefined);
      await stream.close().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(a.transport.counters.malformed).toBe(2);
    const b = await voterNode(key, mkdtempSync(join(tmpdir(), 'nav-voters-')), () => clock);
    await b.node.dial(a.node.getMultiaddrs()[0]!);
    const voterId = a.node.peerId.toString();
    // The first valid request meets a voter still in its start-up quarantine; a lease later it votes.
    const cand = `${b.node.peerId}/c/1`;
    expect(await b.transport.request(voterId, request(cand, voterId, 1))).toMatchObject({ granted: false, reason: 'promised' });
    clock += DEFAULT_ELECTION_CONFIG.leaseMs;
    expect(await b.transport.request(voterId, request(cand, voterId, 1))).toMatchObject({ granted: true });
  });

  it("refuses vote requests, renewals and releases sent in another depot's name, and path names as services", async () => {
    const key = makeSwarmKey();
    const dir = mkdtempSync(join(tmpdir(), 'nav-voters-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    let clock = 9_000_000;
    const refused: Array<{ peer: string; kind: string }> = [];
    const node = await createNode({ swarmKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] });
    cleanup.push(() => node.stop());
    const voters = new Voters({ selfId: node.peerId.toString(), dir, cfg: DEFAULT_ELECTION_CONFIG, now: () => clock, logger: silentLogger() });
    await voters.start();
    const a = new ElectionTransport({ node, voters, logger: silentLogger(), timeoutMs: 1000, refuse: (peer, kind) => refused.push({ peer, kind }) });
    await a.start();
    const honest = await voterNode(key, mkdtempSync(join(tmpdir(), 'nav-voters-')), () => clock);
    const attacker = await voterNode(key, mkdtempSync(join(tmpdir(), 'nav-voters-')), () => clock);
    for (const n of [honest, attacker]) await n.node.dial(node.getMultiaddrs()[0]!);
    const voterId = node.peerId.toString();
    const holder = `${honest.node.peerId}/svc-1/1`;
    // The voter's start-up quarantine (a lease from its first request), then the grant.
    expect(await honest.transport.request(voterId, request(holder, voterId, 1))).toMatchObject({ granted: false, reason: 'promised' });
    clock += DEFAULT_ELECTION_CONFIG.leaseMs;
    expect(await honest.transport.request(voterId, request(holder, voterId, 1))).toMatchObject({ granted: true });
    // The attacker forges a release of the honest holder's lease, and a vote request in its name.
    await attacker.transport.request(voterId, { type: 'lease-release', v: 1, service: 'svc', term: 1, holder });
    expect(await attacker.transport.request(voterId, request(`${honest.node.peerId}/svc-9/1`, voterId, 2))).toBeUndefined();
    expect(await attacker.transport.request(voterId, { type: 'lease-renew', v: 1, service: 'svc', term: 1, holder, seq: 2, view: initialView([voterId]) })).toBeUndefined();
    await new Promise((r) => setTimeout(r, 200));
    expect(a.counters.refused).toBe(3);
    expect(refused.map((r) => r.kind).sort()).toEqual(['election.lease-release', 'election.lease-renew', 'election.vote-request']);
    expect(new Set(refused.map((r) => r.peer))).toEqual(new Set([attacker.node.peerId.toString()]));
    // The promise to the honest holder still stands: nobody else gets a vote while it runs.
    expect(voters.snapshot()).toEqual([expect.objectContaining({ service: 'svc', votedTerm: 1, promisedTo: holder, promiseLeftMs: expect.any(Number) })]);
    expect(voters.snapshot()[0]!.promiseLeftMs).toBeGreaterThan(0);
    // A service name that would be a path is not even a valid message.
    const evil = { ...request(`${attacker.node.peerId}/x/1`, voterId, 3), service: '../../etc/x' };
    expect(await attacker.transport.request(voterId, evil as VoteRequest)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 100));
    expect(a.counters.malformed).toBe(1);
    expect(readdirSync(dir).sort()).toEqual(['svc.json']);
  });

  it('an unreachable voter is simply no reply', async () => {
    const key = makeSwarmKey();
    const a = await voterNode(key, mkdtempSync(join(tmpdir(), 'nav-voters-')), () => 0);
    const reply = await a.transport.request('12D3KooWHqTSfavqSeP8j6djvKjKAVBNXBc7AmHEYnEzdFcWzaQg', request('c', 'x', 1));
    expect(reply).toBeUndefined();
    expect(a.transport.counters.failed).toBe(1);
  });

  it('finds the address others reach a depot at', () => {
    expect(hostAddressOf({ addresses: ['/ip4/127.0.0.1/tcp/7470/p2p/x', '/ip4/10.1.2.3/tcp/7470/p2p/x'] })).toBe('10.1.2.3');
    expect(hostAddressOf({ addresses: ['/ip4/127.0.0.3/tcp/7470/p2p/x'] })).toBe('127.0.0.3');
    expect(hostAddressOf({ addresses: ['/ip6/::1/tcp/1'] })).toBeUndefined();
  });
});
