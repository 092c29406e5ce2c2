// A compromised swarm member: a real libp2p node holding the swarm key, run inside a lab
// namespace (`node --import tsx lab/attacker.ts '<json plan>'`). It tries every control and
// election method against the depots it is given, with forged messages, path names and fake
// heartbeat claims, and prints one JSON line per attempt ({ what, target, outcome, code }), then
// {"done":true}. It asserts nothing: the lab test judges the outcomes.
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { createNode } from '../depot/libp2p.ts';
import { readSwarmKey } from '../depot/swarm-key.ts';
import { ControlClient } from '../depot/control/client.ts';
import { frame, readFrame } from '../depot/control/frames.ts';
import { isNavigatorError } from '../shared/errors.ts';
import { ELECTION_PROTOCOL, ElectionMessage, TOPICS, decodeMessage, encodeMessage } from '../shared/wire.ts';

export interface AttackPlan {
  swarmKeyFile: string;
  listen: string;
  service: string;
  term: number;
  image: string;
  address: string;
  /** Every depot of the cluster: its multiaddr, and the container it hosts of the service. */
  depots: Array<{ name: string; peerId: string; addr: string; container: string; role: 'primary' | 'standby' }>;
}

const plan = JSON.parse(process.argv[2] ?? '{}') as AttackPlan;
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const node = await createNode({ swarmKey: await readSwarmKey(plan.swarmKeyFile), listen: [plan.listen] });
const self = node.peerId.toString();
const client = new ControlClient({ node, timeoutMs: 10_000 });
for (const d of plan.depots) await node.dial(multiaddr(d.addr)).catch(() => undefined);

async function control(target: string, what: string, method: string, params: unknown): Promise<void> {
  const d = plan.depots.find((x) => x.name === target)!;
  try {
    await client.call(peerIdFromString(d.peerId), method, params);
    out({ what, target, method, outcome: 'accepted' });
  } catch (err) {
    out({ what, target, method, outcome: 'refused', code: isNavigatorError(err) ? err.code : 'ERROR', message: (err as Error).message.slice(0, 200) });
  }
}

async function election(target: string, what: string, msg: unknown): Promise<void> {
  const d = plan.depots.find((x) => x.name === target)!;
  try {
    const stream = await node.dialProtocol(peerIdFromString(d.peerId), ELECTION_PROTOCOL, { signal: AbortSignal.timeout(5000) });
    await stream.sink([frame(encodeMessage(msg, 16_384))]);
    const reply = decodeMessage(ElectionMessage, await readFrame(stream, 3000, 16_384), 16_384);
    await stream.close().catch(() => undefined);
    const granted = reply.ok && 'granted' in reply.value ? reply.value.granted : undefined;
    out({ what, target, outcome: granted ? 'accepted' : 'refused', code: reply.ok ? `reply:${'reason' in reply.value ? reply.value.reason : ''}` : 'no-reply' });
  } catch {
    out({ what, target, outcome: 'refused', code: 'no-reply' });
  }
}

const primary = plan.depots.find((d) => d.role === 'primary')!;
const standby = plan.depots.find((d) => d.role === 'standby')!;
const view = { epoch: [plan.term, 0], voters: plan.depots.map((d) => d.peerId).sort() };
const spec = { name: plan.service, image: plan.image, container: { driver: 'process' }, address: '10.255.255.1/24', iface: 'eth0', port: 7000 };
const manifest = { format: 1, name: plan.service, version: 'evil', created: new Date().toISOString(), blockSize: 1 << 20, files: [] };

for (const d of plan.depots) {
  await control(d.name, 'exec a program', 'container.exec', { id: d.container, cmd: 'id', args: [] });
  await control(d.name, 'start a container in the current term', 'container.start', { id: 'evil-1', service: plan.service, image: plan.image, spec: { driver: 'process' }, role: 'primary', term: plan.term });
  await control(d.name, 'stop the copy', 'container.stop', { id: d.container, timeoutMs: 0 });
  await control(d.name, 'assign a copy that campaigns for a foreign address', 'pilot.assign', { spec, container: d.container, view, term: plan.term, campaign: true });
  await control(d.name, 'assign without campaigning', 'pilot.assign', { spec, container: d.container, view, term: plan.term, campaign: false });
  await control(d.name, 'retire the copy', 'pilot.retire', { container: d.container });
  await control(d.name, 'retire a path', 'pilot.retire', { container: '../../voters/echo' });
  await control(d.name, 'start a container at a path', 'container.start', { id: '../../evil', service: plan.service, spec: { driver: 'process' }, term: plan.term });
  await control(d.name, 'campaign', 'pilot.campaign', { service: plan.service, term: plan.term });
  await control(d.name, 'resign', 'pilot.resign', { service: plan.service });
  await control(d.name, 'announce a switchover to this copy', 'pilot.expect', { service: plan.service, term: plan.term, withinMs: 60_000 });
  await control(d.name, 'hand over a recovery kit with a foreign address', 'recovery.stage', { spec, view, term: plan.term });
  await control(d.name, 'prepare an image receive', 'image.prepare', { manifest });
  await control(d.name, 'commit an image', 'image.commit', { image: plan.image });
  await control(d.name, 'abort an image receive', 'image.abort', { image: plan.image });
  const primaryPilot = `${primary.peerId}/${primary.container}/0.0`;
  await election(d.name, 'forged lease release of the primary', { type: 'lease-release', v: 1, service: plan.service, term: plan.term, holder: primaryPilot });
  await election(d.name, 'forged lease renewal of the primary', { type: 'lease-renew', v: 1, service: plan.service, term: plan.term, holder: primaryPilot, seq: 1, view });
  await election(d.name, 'vote request in the standby\'s name', { type: 'vote-request', v: 1, service: plan.service, term: plan.term + 1, candidate: `${standby.peerId}/${standby.container}/0.0`, syncTime: Date.now() + 3_600_000, seq: 1, view });
  await election(d.name, 'vote request for a path as service', { type: 'vote-request', v: 1, service: '../../etc/cron.d/x', term: plan.term + 1, candidate: `${self}/x/0.0`, syncTime: 0, seq: 1, view });
  await election(d.name, 'vote request in its own name during the lease', { type: 'vote-request', v: 1, service: plan.service, term: plan.term + 1, candidate: `${self}/x/0.0`, syncTime: Date.now() + 3_600_000, seq: 1, view });
}

// Fake heartbeat claims, signed by this node: a primary of the service in a far later term, and
// a standby copy with a sync time an hour in the future.
const pubsub = node.services.pubsub;
pubsub.subscribe(TOPICS.heartbeat);
await new Promise((r) => setTimeout(r, 2000));
for (let seq = 0; seq < 3; seq++) {
  const hb = {
    type: 'heartbeat', v: 1, peerId: self, name: 'attacker', seq, incarnation: 1, sentAt: Date.now(), addresses: [`${plan.listen}/p2p/${self}`], hostAddresses: [],
    bootTime: Date.now() - 1e6, uptimeS: 1000, load: [0, 0, 0], cpus: 1, memFreeBytes: 1e9, memTotalBytes: 2e9, diskFreeBytes: 1e12, images: [], staging: [],
    containers: [
      { id: 'evil-p', service: plan.service, driver: 'process', state: 'running', role: 'primary', term: plan.term + 100, image: plan.image, syncFailing: false },
      { id: 'evil-s', service: plan.service, driver: 'process', state: 'running', role: 'standby', term: plan.term, image: plan.image, lastSyncAt: Date.now() + 3_600_000, syncFailing: false },
    ],
    version: 'attacker',
  };
  const r = await pubsub.publish(TOPICS.heartbeat, encodeMessage(hb)).catch((err: unknown) => ({ error: String(err) }));
  out({ what: 'fake heartbeat claims', target: 'gossip', outcome: 'sent', code: 'recipients' in (r as object) ? String((r as { recipients: unknown[] }).recipients.length) : String((r as { error?: string }).error ?? '') });
  await new Promise((r2) => setTimeout(r2, 1000));
}
out({ done: true, peerId: self });
await node.stop();
process.exit(0);
