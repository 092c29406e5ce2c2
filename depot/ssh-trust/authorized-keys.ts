import { PUBLIC_KEY_RE } from './ssh-keys.ts';

// The receive account's authorized_keys, as a pure function of the membership view: exactly the
// SFTP keys that the current members (alive or suspect: a suspect is still one) announce in
// their heartbeats. A depot that leaves or is declared dead drops out at the next rewrite, so
// it can no longer write into this host's staging folder. Each key is `restrict`ed (no pty, no
// forwarding, no agent, no X11, no user rc) on top of the sshd drop-in's ForceCommand.

export interface KeyHolder {
  peerId: string;
  name: string;
  state: 'alive' | 'suspect' | 'dead' | 'left';
  self: boolean;
  /** "ssh-ed25519 AAAA…" from its heartbeat. */
  sshKey: string | undefined;
}

const HEADER = '# Written by the navigator depot: the SFTP keys of the current swarm members. Do not edit.';

/** authorized_keys text for these members (sorted by peer id, so equal views give equal text). */
export function renderAuthorizedKeys(members: readonly KeyHolder[]): string {
  const lines = members
    .filter((m) => !m.self && (m.state === 'alive' || m.state === 'suspect') && m.sshKey !== undefined && PUBLIC_KEY_RE.test(m.sshKey))
    .sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))
    .map((m) => `restrict ${m.sshKey} ${commentOf(m)}`);
  return `${[HEADER, ...lines].join('\n')}\n`;
}

/** A comment naming the depot, limited to characters no sshd parser can mistake for options. */
function commentOf(m: KeyHolder): string {
  const name = m.name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  return `navigator:${name}:${m.peerId}`;
}

/** How many keys a rendered file holds. */
export function keyCount(text: string): number {
  return text.split('\n').filter((l) => l.startsWith('restrict ')).length;
}
