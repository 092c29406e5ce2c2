import { z } from 'zod';
import type { DepotHostKey } from '../../shared/api/depots.ts';
import { FINGERPRINT_RE } from './ssh-keys.ts';

// Host key pinning from heartbeats, as pure decisions. Every depot announces the fingerprint of
// its sshd's host key in its heartbeat, which is signed by its libp2p key and accepted only from
// the peer it names: the swarm vouches for the announcement. The first fingerprint a depot (peer
// id) announces is pinned; a sender then connects only to an sshd that presents exactly that
// key. A depot that later announces another fingerprint is "changed": refused until an admin
// forgets its pin (`navigator trust forget NAME`), because a silent re-pin would let whoever took
// over that peer's identity or that host's sshd receive images unnoticed.

export const PinFile = z
  .object({
    v: z.literal(1),
    pins: z.record(
      z.string().min(10).max(128).describe('Peer id of the depot'),
      z.object({
        name: z.string().max(256).describe('Depot name when it was pinned (for people)'),
        fingerprint: z.string().regex(FINGERPRINT_RE).describe("SHA256 fingerprint of its sshd's Ed25519 host key"),
        pinnedAt: z.number().nonnegative().describe('When it was pinned (ms since the epoch)'),
      }),
    ),
  })
  .strict();
export type PinFile = z.infer<typeof PinFile>;
export type HostKeyPin = PinFile['pins'][string];

/** A depot's host key as this depot judges it (GET /api/depots shows it). */
export type HostKeyState = DepotHostKey;

export function emptyPins(): PinFile {
  return { v: 1, pins: {} };
}

export type PinEvent = { kind: 'pinned'; fingerprint: string } | { kind: 'changed'; pinned: string; announced: string } | { kind: 'restored'; fingerprint: string };

/**
 * What a heartbeat's announced fingerprint does to the pins: pin a first one, flag a different
 * one (once: `event` only on the transition), clear the flag when the pinned one is announced again.
 */
export function observeAnnounced(
  pins: PinFile,
  changed: ReadonlyMap<string, { announced: string; since: number }>,
  peerId: string,
  name: string,
  announced: string | undefined,
  now: number,
): { pins: PinFile; changed: Map<string, { announced: string; since: number }>; event?: PinEvent } {
  const nextChanged = new Map(changed);
  if (announced === undefined) return { pins, changed: nextChanged };
  const pin = pins.pins[peerId];
  if (!pin) {
    nextChanged.delete(peerId);
    return { pins: { v: 1, pins: { ...pins.pins, [peerId]: { name, fingerprint: announced, pinnedAt: now } } }, changed: nextChanged, event: { kind: 'pinned', fingerprint: announced } };
  }
  if (pin.fingerprint === announced) {
    const was = nextChanged.delete(peerId);
    return { pins, changed: nextChanged, ...(was ? { event: { kind: 'restored' as const, fingerprint: announced } } : {}) };
  }
  const prev = changed.get(peerId);
  if (prev?.announced === announced) return { pins, changed: nextChanged };
  nextChanged.set(peerId, { announced, since: now });
  return { pins, changed: nextChanged, event: { kind: 'changed', pinned: pin.fingerprint, announced } };
}

/** The state of one depot's host key. */
export function hostKeyState(pins: PinFile, changed: ReadonlyMap<string, { announced: string; since: number }>, peerId: string): HostKeyState {
  const pin = pins.pins[peerId];
  if (!pin) return { state: 'none' };
  const c = changed.get(peerId);
  if (c) return { state: 'changed', pinned: pin.fingerprint, announced: c.announced, pinnedAt: pin.pinnedAt, since: c.since };
  return { state: 'pinned', fingerprint: pin.fingerprint, pinnedAt: pin.pinnedAt };
}

/** Remove the pins of the depots named `who` (a name or a peer id); returns the peer ids removed. */
export function forgetPins(pins: PinFile, who: string): { pins: PinFile; removed: string[] } {
  const removed = Object.entries(pins.pins)
    .filter(([peerId, p]) => peerId === who || p.name === who)
    .map(([peerId]) => peerId);
  const next = { ...pins.pins };
  for (const id of removed) delete next[id];
  return { pins: { v: 1, pins: next }, removed };
}
