import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import type { MemberDirectory } from '../components.ts';
import type { MemberView } from '../membership/membership.ts';
import { hostKeyFingerprint, loadOrCreateSshKey } from './ssh-keys.ts';
import { writeFileDurable } from '../../shared/durable-file.ts';
import { keyCount, renderAuthorizedKeys } from './authorized-keys.ts';
import { PinFile, emptyPins, hostKeyState, observeAnnounced, type HostKeyState } from './host-key-pins.ts';

// Zero-touch SSH trust for image shipping, built on what the swarm already authenticates. This
// depot:
//  - holds its own SFTP key pair (made at install, or here at first start) and announces the
//    public key and its sshd's host key fingerprint in its signed heartbeat;
//  - keeps the receive account's authorized_keys equal to the SFTP keys of the current members
//    (authorized-keys.ts), rewritten atomically whenever membership or a key changes;
//  - pins the host key fingerprint each depot announces (host-key-pins.ts, kept in
//    DATADIR/ssh/host-keys.json) and tells the sender which key a depot's sshd must present.
// Nobody runs ssh-keygen or ssh-keyscan or edits a key file.

/** The host key file is read again at most this often (an admin may regenerate it). */
const HOST_KEY_REREAD_MS = 10_000;
/** The pins file is checked for outside edits (`navigator trust forget`) at most this often. */
const PINS_RECHECK_MS = 1000;

export const PINS_FILE = 'host-keys.json';

export interface SshTrustOptions {
  /** DATADIR/ssh: the pins file. */
  dir: string;
  /** This depot's SFTP private key (ship.sshKeyFile). */
  keyFile: string;
  /** This host's sshd host public key (ship.hostKeyFile); empty: none announced. */
  hostKeyFile: string;
  /** Written here (ship.authorizedKeysFile). */
  authorizedKeysFile: string;
  members: Pick<MemberDirectory, 'view' | 'events'>;
  logger: Logger;
  now?: () => number;
}

export class SshTrust {
  private readonly log: Logger;
  private readonly now: () => number;
  private publicKey: string | undefined;
  private hostKey: { fingerprint: string | undefined; readAt: number } = { fingerprint: undefined, readAt: -Infinity };
  private pins: PinFile = emptyPins();
  private pinsMtime = 0;
  private pinsCheckedAt = -Infinity;
  private changed = new Map<string, { announced: string; since: number }>();
  private written: string | undefined;
  private writing: Promise<void> = Promise.resolve();
  private pinsWriting: Promise<void> = Promise.resolve();
  private running = false;
  private readonly onChange = () => this.sync();

  constructor(private readonly opts: SshTrustOptions) {
    this.log = opts.logger.child({ component: 'ssh-trust' });
    this.now = opts.now ?? Date.now;
  }

  async start(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o750 });
    const key = await loadOrCreateSshKey(this.opts.keyFile);
    this.publicKey = key.publicKey;
    if (key.created) this.log.info({ event: 'ssh-key-created', file: this.opts.keyFile }, 'made this depot\'s SFTP key pair');
    await this.readHostKey(true);
    await this.loadPins(true);
    this.running = true;
    this.opts.members.events.on('heartbeat', this.onChange);
    this.opts.members.events.on('transition', this.onChange);
    this.sync();
    await this.writing;
  }

  async stop(): Promise<void> {
    this.running = false;
    this.opts.members.events.off('heartbeat', this.onChange);
    this.opts.members.events.off('transition', this.onChange);
    await this.writing;
    await this.pinsWriting;
  }

  /** What this depot adds to its heartbeat. */
  async heartbeatContent(): Promise<{ sshKey?: string; sshHostKey?: string }> {
    await this.readHostKey(false);
    return { ...(this.publicKey ? { sshKey: this.publicKey } : {}), ...(this.hostKey.fingerprint ? { sshHostKey: this.hostKey.fingerprint } : {}) };
  }

  /** How this depot judges `peerId`'s host key (GET /api/depots). */
  hostKeyOf(peerId: string): HostKeyState {
    return hostKeyState(this.pins, this.changed, peerId);
  }

  /**
   * The fingerprint `peerId`'s sshd must present, for the sender; a clear HOST_KEY_MISMATCH when
   * there is none to trust.
   */
  async expectedHostKey(peerId: string, name: string): Promise<string> {
    await this.loadPins(false);
    const s = this.hostKeyOf(peerId);
    if (s.state === 'pinned') return s.fingerprint;
    if (s.state === 'changed') {
      throw new NavigatorError(
        'HOST_KEY_MISMATCH',
        `HOST KEY CHANGED for depot ${name}: it now announces ${s.announced} but ${s.pinned} was pinned on ${new Date(s.pinnedAt).toISOString()}; refusing to ship to it. If its sshd keys were regenerated on purpose, run \`navigator trust forget ${name}\` on this host`,
        { peerId, pinned: s.pinned, announced: s.announced },
      );
    }
    throw new NavigatorError('HOST_KEY_MISMATCH', `depot ${name} announces no sshd host key (is openssh-server installed there, with ${this.opts.hostKeyFile}?): cannot pin it, refusing to ship to it`, { peerId });
  }

  /** Recompute pins and authorized_keys from the membership view. */
  private sync(): void {
    if (!this.running) return;
    const view = this.opts.members.view();
    this.observePins(view);
    const text = renderAuthorizedKeys(
      view.map((m) => ({ peerId: m.peerId, name: m.name, state: m.state, self: m.self, sshKey: m.heartbeat?.sshKey })),
    );
    if (text === this.written) return;
    this.written = text;
    this.writing = this.writing.then(async () => {
      if (this.written !== text) return; // a newer text is queued behind this one
      try {
        await writeFileDurable(this.opts.authorizedKeysFile, text, { mode: 0o640 });
        this.log.info({ event: 'ssh-authorized-keys', keys: keyCount(text), file: this.opts.authorizedKeysFile }, `receive account accepts ${keyCount(text)} depot key(s)`);
      } catch (err) {
        this.written = undefined; // try again at the next change
        this.log.error({ event: 'ssh-authorized-keys-failed', file: this.opts.authorizedKeysFile, err: errorMessage(err) }, 'could not write authorized_keys');
      }
    });
  }

  private observePins(view: readonly MemberView[]): void {
    let pins = this.pins;
    let changed = this.changed;
    let dirty = false;
    for (const m of view) {
      if (m.self || !m.heartbeat || (m.state !== 'alive' && m.state !== 'suspect')) continue;
      const r = observeAnnounced(pins, changed, m.peerId, m.name, m.heartbeat.sshHostKey, this.now());
      pins = r.pins;
      changed = r.changed;
      if (!r.event) continue;
      if (r.event.kind === 'pinned') {
        dirty = true;
        this.log.info({ event: 'ssh-host-key-pinned', peer: m.peerId, name: m.name, fingerprint: r.event.fingerprint }, `pinned the sshd host key of ${m.name}`);
      } else if (r.event.kind === 'changed') {
        this.log.error(
          { event: 'ssh-host-key-changed', peer: m.peerId, name: m.name, pinned: r.event.pinned, announced: r.event.announced },
          `HOST KEY CHANGED for depot ${m.name}: it announces ${r.event.announced}, pinned ${r.event.pinned}; images are not shipped to it (\`navigator trust forget ${m.name}\` accepts the new key)`,
        );
      } else {
        this.log.warn({ event: 'ssh-host-key-restored', peer: m.peerId, name: m.name, fingerprint: r.event.fingerprint }, `${m.name} announces its pinned host key again`);
      }
    }
    this.pins = pins;
    this.changed = changed;
    if (dirty) this.savePins();
  }

  private savePins(): void {
    const text = `${JSON.stringify(this.pins, null, 1)}\n`;
    const file = join(this.opts.dir, PINS_FILE);
    this.pinsWriting = this.pinsWriting.then(async () => {
      try {
        await writeFileDurable(file, text, { mode: 0o640 });
        this.pinsMtime = (await stat(file)).mtimeMs;
      } catch (err) {
        this.log.error({ event: 'ssh-pins-save-failed', file, err: errorMessage(err) }, 'could not save host key pins');
      }
    });
  }

  /** Load the pins file (at start, and again when something else changed it). */
  private async loadPins(force: boolean): Promise<void> {
    const now = this.now();
    if (!force && now - this.pinsCheckedAt < PINS_RECHECK_MS) return;
    this.pinsCheckedAt = now;
    await this.pinsWriting;
    const file = join(this.opts.dir, PINS_FILE);
    const st = await stat(file).catch(() => undefined);
    if (!st) {
      if (force) this.pins = emptyPins();
      return;
    }
    if (!force && st.mtimeMs === this.pinsMtime) return;
    try {
      const parsed = PinFile.parse(JSON.parse(await readFile(file, 'utf8')));
      // A pin removed from outside (forget) also clears its "changed" flag: the next heartbeat pins anew.
      for (const id of this.changed.keys()) if (!parsed.pins[id]) this.changed.delete(id);
      this.pins = parsed;
      this.pinsMtime = st.mtimeMs;
      if (!force) {
        this.log.info({ event: 'ssh-pins-reloaded', pins: Object.keys(parsed.pins).length }, 'host key pins changed on disk; reloaded');
        this.sync();
      }
    } catch (err) {
      // Fail closed: an unreadable pins file is not an empty one (that would re-pin anything).
      throw new NavigatorError('CONFIG_INVALID', `host key pins ${file} are unreadable: ${errorMessage(err)}; fix or remove the file`);
    }
  }

  private async readHostKey(force: boolean): Promise<void> {
    const now = this.now();
    if (!force && now - this.hostKey.readAt < HOST_KEY_REREAD_MS) return;
    this.hostKey.readAt = now;
    if (!this.opts.hostKeyFile) return;
    try {
      const fp = await hostKeyFingerprint(this.opts.hostKeyFile);
      if (fp !== this.hostKey.fingerprint || force) {
        if (fp) this.log.info({ event: 'ssh-host-key', file: this.opts.hostKeyFile, fingerprint: fp }, 'announcing this host\'s sshd host key');
        else this.log.warn({ event: 'ssh-host-key-missing', file: this.opts.hostKeyFile }, 'no sshd host key: other depots cannot ship images here');
      }
      this.hostKey.fingerprint = fp;
    } catch (err) {
      this.hostKey.fingerprint = undefined;
      this.log.error({ event: 'ssh-host-key-unreadable', file: this.opts.hostKeyFile, err: errorMessage(err) }, 'sshd host key unreadable: other depots cannot ship images here');
    }
  }
}
