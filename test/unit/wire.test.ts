import { describe, it, expect } from 'vitest';
import { HeartbeatMessage, MembershipMessage, decodeMessage, encodeMessage } from '../../shared/wire.ts';

const peerId = '12D3KooWHqTSfavqSeP8j6djvKjKAVBNXBc7AmHEYnEzdFcWzaQg';
const good = {
  type: 'heartbeat',
  v: 1,
  peerId,
  name: 'ws-01',
  seq: 4,
  incarnation: 1,
  sentAt: 1,
  addresses: ['/ip4/10.0.0.1/tcp/7470'],
  bootTime: 0,
  uptimeS: 100,
  load: [0.1, 0.2, 0.3],
  cpus: 4,
  memFreeBytes: 1e9,
  memTotalBytes: 8e9,
  diskFreeBytes: 1e10,
  version: '0.1.0',
};
const bytes = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

describe('wire codec', () => {
  it('round-trips a heartbeat and fills defaults', () => {
    const r = decodeMessage(HeartbeatMessage, encodeMessage(good));
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.value.containers).toEqual([]);
      expect(r.value.images).toEqual([]);
    }
  });

  it('rejects non-JSON, bad UTF-8, wrong types, missing fields and unknown types', () => {
    expect(decodeMessage(HeartbeatMessage, bytes('{not json'))).toMatchObject({ ok: false, reason: 'not-json' });
    expect(decodeMessage(HeartbeatMessage, new Uint8Array([0xff, 0xfe, 0x7b]))).toMatchObject({ ok: false, reason: 'not-json' });
    expect(decodeMessage(HeartbeatMessage, bytes({ ...good, cpus: 'four' }))).toMatchObject({ ok: false, reason: 'schema', detail: expect.stringContaining('cpus') });
    const { name: _n, ...noName } = good;
    expect(decodeMessage(HeartbeatMessage, bytes(noName))).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeMessage(HeartbeatMessage, bytes({ ...good, load: [1, 2] }))).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeMessage(HeartbeatMessage, bytes({ ...good, memFreeBytes: -1 }))).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeMessage(MembershipMessage, bytes({ type: 'explode', v: 1 }))).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeMessage(HeartbeatMessage, bytes('null'))).toMatchObject({ ok: false, reason: 'schema' });
  });

  it('rejects oversized messages before parsing and refuses to encode them', () => {
    const big = { ...good, name: 'x'.repeat(200), addresses: Array.from({ length: 20 }, () => 'a'.repeat(250)) };
    expect(decodeMessage(HeartbeatMessage, bytes(big), 1024)).toMatchObject({ ok: false, reason: 'too-large' });
    expect(() => encodeMessage(big, 1024)).toThrow(/exceeds the limit of 1024/);
  });

  it('rejects over-long fields even within the size limit', () => {
    expect(decodeMessage(HeartbeatMessage, bytes({ ...good, name: 'x'.repeat(300) }))).toMatchObject({ ok: false, reason: 'schema' });
  });
});
