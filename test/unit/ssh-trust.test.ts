import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import ssh2 from 'ssh2';
import { FINGERPRINT_RE, PUBLIC_KEY_RE, fingerprint, hostKeyFingerprint, loadOrCreateSshKey, makeSshKeyPair, parsePublicKeyLine, publicKeyOfPrivate } from '../../depot/ssh-trust/ssh-keys.ts';
import { renderAuthorizedKeys, type KeyHolder } from '../../depot/ssh-trust/authorized-keys.ts';
import { emptyPins, forgetPins, hostKeyState, observeAnnounced } from '../../depot/ssh-trust/host-key-pins.ts';
import { PINS_FILE, SshTrust } from '../../depot/ssh-trust/trust.ts';
import { pathInChroot } from '../../depot/images/control-methods.ts';
import { hostVerifierForPin } from '../../ship/ssh-known-hosts.ts';
import type { MemberEvents } from '../../depot/components.ts';
import type { MemberView } from '../../depot/membership/membership.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';
import { silentLogger } from '../../shared/logger.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'nav-trust-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('OpenSSH keys made with node:crypto', () => {
  it('OpenSSH and ssh2 read the private key and derive the same public key and fingerprint', async () => {
    const pair = makeSshKeyPair('t');
    expect(pair.publicKey).toMatch(PUBLIC_KEY_RE);
    const file = join(dir, 'id');
    writeFileSync(file, pair.privateKey, { mode: 0o600 });
    const { stdout } = await execa('ssh-keygen', ['-y', '-f', file]);
    expect(stdout.split(' ').slice(0, 2).join(' ')).toBe(pair.publicKey);
    const fp = (await execa('ssh-keygen', ['-l', '-f', file])).stdout.split(' ')[1];
    expect(fingerprint(parsePublicKeyLine(pair.publicKey)!)).toBe(fp);
    const parsed = ssh2.utils.parseKey(pair.privateKey);
    if (parsed instanceof Error) throw parsed;
    expect(`ssh-ed25519 ${parsed.getPublicSSH().toString('base64')}`).toBe(pair.publicKey);
    expect(publicKeyOfPrivate(pair.privateKey, file)).toBe(pair.publicKey);
  });

  it('makes the depot key once (0600), keeps it, and refuses a file that is not one', async () => {
    const file = join(dir, 'ssh', 'id_ed25519');
    const a = await loadOrCreateSshKey(file);
    expect(a.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(`${file}.pub`, 'utf8')).toContain(a.publicKey);
    const b = await loadOrCreateSshKey(file);
    expect(b).toEqual({ publicKey: a.publicKey, created: false });
    writeFileSync(file, 'garbage');
    await expect(loadOrCreateSshKey(file)).rejects.toThrow(/is not an unencrypted OpenSSH Ed25519 private key/);
  });

  it('reads a host key fingerprint as ssh-keygen -l prints it; a missing file is none', async () => {
    const file = join(dir, 'host');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
    const expected = (await execa('ssh-keygen', ['-l', '-f', `${file}.pub`])).stdout.split(' ')[1];
    expect(await hostKeyFingerprint(`${file}.pub`)).toBe(expected);
    expect(expected).toMatch(FINGERPRINT_RE);
    expect(await hostKeyFingerprint(join(dir, 'absent.pub'))).toBeUndefined();
    writeFileSync(join(dir, 'rsa.pub'), 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 x\n');
    await expect(hostKeyFingerprint(join(dir, 'rsa.pub'))).rejects.toThrow(/not an OpenSSH Ed25519 public key/);
  });

  it('refuses a key line whose label and blob disagree', () => {
    const blob = Buffer.from(parsePublicKeyLine(makeSshKeyPair().publicKey)!);
    blob.write('ssh-ed25518', 4);
    expect(parsePublicKeyLine(`ssh-ed25519 ${blob.toString('base64')}`)).toBeUndefined();
  });
});

const k1 = makeSshKeyPair().publicKey;
const k2 = makeSshKeyPair().publicKey;
const k3 = makeSshKeyPair().publicKey;

describe('authorized_keys of the receive account', () => {
  it('holds exactly the keys of the other current members, restricted, in a stable order', () => {
    const members: KeyHolder[] = [
      { peerId: 'peer-c', name: 'w3', state: 'suspect', self: false, sshKey: k3 },
      { peerId: 'peer-a', name: 'w 1"; evil', state: 'alive', self: false, sshKey: k1 },
      { peerId: 'peer-self', name: 'me', state: 'alive', self: true, sshKey: k2 },
      { peerId: 'peer-d', name: 'gone', state: 'left', self: false, sshKey: k2 },
      { peerId: 'peer-e', name: 'dead', state: 'dead', self: false, sshKey: k2 },
      { peerId: 'peer-f', name: 'old', state: 'alive', self: false, sshKey: undefined },
      { peerId: 'peer-g', name: 'bad', state: 'alive', self: false, sshKey: 'ssh-ed25519 AAAA\ncommand="sh" x' },
    ];
    const lines = renderAuthorizedKeys(members).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^# Written by the navigator depot/);
    expect(lines.slice(1)).toEqual([`restrict ${k1} navigator:w_1___evil:peer-a`, `restrict ${k3} navigator:w3:peer-c`]);
    expect(renderAuthorizedKeys([...members].reverse())).toBe(renderAuthorizedKeys(members));
  });
});

describe('host key pins from heartbeats', () => {
  const fpA = `SHA256:${'A'.repeat(43)}`;
  const fpB = `SHA256:${'B'.repeat(43)}`;

  it('pins the first announcement, flags a different one once, and clears the flag when the pinned key returns', () => {
    let r = observeAnnounced(emptyPins(), new Map(), 'p1', 'w1', fpA, 1000);
    expect(r.event).toEqual({ kind: 'pinned', fingerprint: fpA });
    expect(hostKeyState(r.pins, r.changed, 'p1')).toEqual({ state: 'pinned', fingerprint: fpA, pinnedAt: 1000 });
    r = observeAnnounced(r.pins, r.changed, 'p1', 'w1', fpA, 2000);
    expect(r.event).toBeUndefined();
    r = observeAnnounced(r.pins, r.changed, 'p1', 'w1', fpB, 3000);
    expect(r.event).toEqual({ kind: 'changed', pinned: fpA, announced: fpB });
    expect(hostKeyState(r.pins, r.changed, 'p1')).toEqual({ state: 'changed', pinned: fpA, announced: fpB, pinnedAt: 1000, since: 3000 });
    r = observeAnnounced(r.pins, r.changed, 'p1', 'w1', fpB, 4000);
    expect(r.event).toBeUndefined();
    expect(r.pins.pins.p1!.fingerprint).toBe(fpA);
    r = observeAnnounced(r.pins, r.changed, 'p1', 'w1', undefined, 5000);
    expect(hostKeyState(r.pins, r.changed, 'p1').state).toBe('changed');
    r = observeAnnounced(r.pins, r.changed, 'p1', 'w1', fpA, 6000);
    expect(r.event).toEqual({ kind: 'restored', fingerprint: fpA });
    expect(hostKeyState(r.pins, r.changed, 'p2')).toEqual({ state: 'none' });
  });

  it('forgets pins by name or peer id', () => {
    let pins = observeAnnounced(emptyPins(), new Map(), 'p1', 'w1', fpA, 1).pins;
    pins = observeAnnounced(pins, new Map(), 'p2', 'w2', fpB, 1).pins;
    expect(forgetPins(pins, 'w1').removed).toEqual(['p1']);
    expect(Object.keys(forgetPins(pins, 'p2').pins.pins)).toEqual(['p1']);
    expect(forgetPins(pins, 'nobody').removed).toEqual([]);
  });

  it('the sender accepts exactly the pinned key and names depot, address and both fingerprints otherwise', () => {
    const blob = parsePublicKeyLine(k1)!;
    const good = hostVerifierForPin({ fingerprint: fingerprint(blob), depot: 'w2' }, '10.0.0.2', 22);
    expect(good.verify(blob)).toBe(true);
    expect(good.refusal()).toBeUndefined();
    const other = parsePublicKeyLine(k2)!;
    expect(good.verify(other)).toBe(false);
    expect(good.refusal()?.message).toBe(`HOST KEY CHANGED for depot w2 (10.0.0.2): its sshd presented ${fingerprint(other)} but ${fingerprint(blob)} is pinned from its heartbeats; refusing to connect`);
    expect(good.refusal()?.code).toBe('HOST_KEY_MISMATCH');
  });
});

describe('image.prepare paths inside the receive chroot', () => {
  it('maps store paths to what the chrooted account sees and refuses one outside', () => {
    expect(pathInChroot('/var/lib/navigator-store/staging/x.1/files', '/var/lib/navigator-store')).toBe('/staging/x.1/files');
    expect(pathInChroot('/var/lib/navigator-store/staging/x.1/files', '/var/lib/navigator-store/')).toBe('/staging/x.1/files');
    expect(pathInChroot('/srv/s/staging/x', '')).toBe('/srv/s/staging/x');
    expect(() => pathInChroot('/var/lib/navigator-storex/staging', '/var/lib/navigator-store')).toThrow(/outside the receive account's chroot/);
  });
});

function member(peerId: string, name: string, state: MemberView['state'], extra: Partial<HeartbeatMessage> = {}, self = false): MemberView {
  return {
    peerId,
    name,
    state,
    incarnation: 1,
    seq: 0,
    lastHeardAt: 0,
    since: 0,
    self,
    reason: '',
    heartbeat: { peerId, name, ...extra } as HeartbeatMessage,
  };
}

describe('SshTrust, the depot part', () => {
  it('announces its keys, keeps authorized_keys to the members, pins host keys and refuses a changed one until forgotten', async () => {
    const events = new EventEmitter<MemberEvents>();
    let view: MemberView[] = [];
    const hostKey = join(dir, 'host');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    const fpA = `SHA256:${'A'.repeat(43)}`;
    const fpB = `SHA256:${'B'.repeat(43)}`;
    let now = 1_000;
    const trust = new SshTrust({
      dir: join(dir, 'ssh'),
      keyFile: join(dir, 'ssh', 'id_ed25519'),
      hostKeyFile: `${hostKey}.pub`,
      authorizedKeysFile: join(dir, 'ssh', 'authorized_keys'),
      members: { view: () => view, events },
      logger: silentLogger(),
      now: () => now,
    });
    await trust.start();
    const own = await trust.heartbeatContent();
    expect(own.sshKey).toMatch(PUBLIC_KEY_RE);
    expect(own.sshHostKey).toBe(await hostKeyFingerprint(`${hostKey}.pub`));
    const authorized = () => readFileSync(join(dir, 'ssh', 'authorized_keys'), 'utf8');
    const settle = () => new Promise((r) => setTimeout(r, 50));
    // The file is rewritten asynchronously: on a loaded machine 50 ms is not always enough.
    const until = async (what: string, ok: () => boolean) => {
      for (const end = Date.now() + 10_000; !ok(); await settle()) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    };
    expect(authorized()).not.toContain('restrict');
    expect(statSync(join(dir, 'ssh', 'authorized_keys')).mode & 0o777).toBe(0o640);

    view = [member('12D3KooWself0', 'me', 'alive', { sshKey: own.sshKey! }, true), member('12D3KooWpeer1', 'w1', 'alive', { sshKey: k1, sshHostKey: fpA }), member('12D3KooWpeer2', 'w2', 'alive', { sshKey: k2, sshHostKey: fpB })];
    events.emit('heartbeat', view[1]!.heartbeat!);
    await until('both keys authorized', () => authorized().includes(k1) && authorized().includes(k2));
    expect(authorized()).toContain(k1);
    expect(authorized()).toContain(k2);
    expect(authorized()).not.toContain(own.sshKey!);
    expect(await trust.expectedHostKey('12D3KooWpeer1', 'w1')).toBe(fpA);
    expect(JSON.parse(readFileSync(join(dir, 'ssh', PINS_FILE), 'utf8')).pins['12D3KooWpeer2'].fingerprint).toBe(fpB);

    // w2 leaves: its key is gone at once.
    view = [view[0]!, view[1]!, member('12D3KooWpeer2', 'w2', 'left', { sshKey: k2, sshHostKey: fpB })];
    events.emit('transition', { kind: 'transition', peer: '12D3KooWpeer2', name: 'w2', from: 'alive', to: 'left', reason: 'left', incarnation: 1 });
    await until("w2's key gone", () => !authorized().includes(k2));
    expect(authorized()).toContain(k1);
    expect(authorized()).not.toContain(k2);

    // w1 announces another host key: refused, with both fingerprints and the way out.
    view = [view[0]!, member('12D3KooWpeer1', 'w1', 'alive', { sshKey: k1, sshHostKey: fpB }), view[2]!];
    events.emit('heartbeat', view[1]!.heartbeat!);
    await until('the changed host key seen', () => trust.hostKeyOf('12D3KooWpeer1')?.state === 'changed');
    expect(trust.hostKeyOf('12D3KooWpeer1')).toMatchObject({ state: 'changed', pinned: fpA, announced: fpB });
    await expect(trust.expectedHostKey('12D3KooWpeer1', 'w1')).rejects.toThrow(`HOST KEY CHANGED for depot w1: it now announces ${fpB} but ${fpA} was pinned`);
    await expect(trust.expectedHostKey('12D3KooWpeer3', 'w3')).rejects.toThrow(/depot w3 announces no sshd host key/);

    // `navigator trust forget w1` edits the pins file: reloaded, and what w1 announces now is pinned.
    const file = join(dir, 'ssh', PINS_FILE);
    writeFileSync(file, JSON.stringify(forgetPins(JSON.parse(readFileSync(file, 'utf8')), 'w1').pins));
    now += 5000;
    expect(await trust.expectedHostKey('12D3KooWpeer1', 'w1')).toBe(fpB);
    expect(trust.hostKeyOf('12D3KooWpeer1')).toMatchObject({ state: 'pinned', fingerprint: fpB, pinnedAt: now });
    await trust.stop();
  });
});
