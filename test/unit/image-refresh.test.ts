import { describe, expect, it } from 'vitest';
import { ATTEMPTS, ImageRefresh, refreshTargets, sentPct, type RefreshCandidate } from '../../pilot/image-refresh.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { ShipResult } from '../../ship/shipper.ts';

// The image refresh's plan (which depots get the new version) and its runner with a fake shipper:
// only on the primary's depot, nothing for an unchanged folder, retries (resumes) up to ATTEMPTS,
// no retry for a refused host key, and the status says per depot what happened.

const OLD = 'a'.repeat(64);
const NEW = 'b'.repeat(64);
const cand = (host: string, images: string[], state: RefreshCandidate['state'] = 'alive'): RefreshCandidate => ({ peerId: `p-${host}`, host, state, images });

describe('refreshTargets', () => {
  it('alive depots holding the version the service runs get the new one; those holding it already are present; others are left out', () => {
    const r = refreshTargets([cand('w1', [OLD]), cand('w2', [OLD]), cand('w3', [OLD, NEW]), cand('w4', []), cand('w5', [OLD], 'dead'), cand('w6', ['c'.repeat(64)])], 'p-w1', new Set([OLD]), NEW);
    expect(r.targets.map((t) => t.host)).toEqual(['w2']);
    expect(r.present).toEqual(['w3']);
    expect(r.skipped).toEqual([{ host: 'w5', reason: 'depot dead' }]);
  });

  it('sentPct: share of the image sent, one decimal', () => {
    expect(sentPct({ bytesSent: 14_024_704, imageBytes: 169_213_982 })).toBe(8.3);
    expect(sentPct({ bytesSent: 0, imageBytes: 0 })).toBe(0);
  });
});

function result(kind: ShipResult['kind'], bytesSent: number): ShipResult {
  return { id: NEW, target: 'x:22', kind, imageBytes: 1000, bytesSent, connections: 1, rounds: 1, resentBlocks: 0, connectMs: 1, prepareMs: 1, sendMs: 1, commitMs: 1, durationMs: 5 };
}

function refresher(ship: (peerId: string) => Promise<ShipResult>, opts: { role?: string; imported?: string } = {}) {
  return new ImageRefresh({
    self: { peerId: 'p-w1', name: 'w1' },
    candidates: () => [cand('w1', [OLD]), cand('w2', [OLD]), cand('w3', [OLD])],
    pilotFor: () => (opts.role === undefined ? { role: 'primary', spec: { image: OLD } } : opts.role === 'none' ? undefined : { role: opts.role, spec: { image: OLD } }),
    runningImages: () => [OLD],
    store: { import: async () => opts.imported ?? NEW },
    ship: (peerId) => ship(peerId),
    logger: silentLogger(),
    retryAfterMs: 1,
  });
}

async function settled(r: ImageRefresh): Promise<void> {
  for (let i = 0; i < 200 && r.status()[0]?.state === 'shipping'; i++) await new Promise((res) => setTimeout(res, 5));
}

describe('ImageRefresh', () => {
  it('only on the primary depot of the service', async () => {
    await expect(refresher(async () => result('delta', 1), { role: 'standby' }).refresh({ service: 'svc', imagePath: '/x' })).rejects.toThrow(/primary of svc is not on w1/);
    await expect(refresher(async () => result('delta', 1), { role: 'none' }).refresh({ service: 'svc', imagePath: '/x' })).rejects.toThrow(/primary of svc is not on w1/);
  });

  it('an unchanged folder ships nothing', async () => {
    let calls = 0;
    const r = refresher(async () => (calls++, result('delta', 1)), { imported: OLD });
    expect(await r.refresh({ service: 'svc', imagePath: '/x' })).toMatchObject({ unchanged: true, targets: [] });
    expect(calls).toBe(0);
    expect(r.status()).toEqual([]);
  });

  it('ships to each depot in turn; a failed transfer is retried (a resume) up to ATTEMPTS times; the status says what happened', async () => {
    const tries = new Map<string, number>();
    const r = refresher(async (peer) => {
      const n = (tries.get(peer) ?? 0) + 1;
      tries.set(peer, n);
      if (peer === 'p-w2' && n === 1) throw new NavigatorError('TRANSFER_FAILED', 'cut off');
      if (peer === 'p-w3') throw new NavigatorError('TRANSFER_FAILED', 'sshd gone');
      return result(n > 1 ? 'resume' : 'delta', 40);
    });
    expect(await r.refresh({ service: 'svc', imagePath: '/x' })).toMatchObject({ image: NEW, base: OLD, unchanged: false, targets: ['w2', 'w3'] });
    await expect(r.refresh({ service: 'svc', imagePath: '/x' })).rejects.toThrow(/still shipping/);
    await settled(r);
    const [job] = r.status();
    expect(job).toMatchObject({ state: 'failed', image: NEW });
    expect(job!.targets).toEqual([
      { host: 'w2', peerId: 'p-w2', state: 'done', attempts: 2, kind: 'resume', bytesSent: 40, imageBytes: 1000, durationMs: 5 },
      { host: 'w3', peerId: 'p-w3', state: 'failed', attempts: ATTEMPTS, error: 'sshd gone' },
    ]);
  });

  it('a refused host key is not retried', async () => {
    let calls = 0;
    const r = refresher(async (peer) => {
      if (peer === 'p-w2') {
        calls++;
        throw new NavigatorError('HOST_KEY_MISMATCH', 'HOST KEY CHANGED');
      }
      return result('delta', 10);
    });
    await r.refresh({ service: 'svc', imagePath: '/x' });
    await settled(r);
    expect(calls).toBe(1);
    expect(r.status()[0]!.targets.map((t) => [t.host, t.state])).toEqual([
      ['w2', 'failed'],
      ['w3', 'done'],
    ]);
  });
});
