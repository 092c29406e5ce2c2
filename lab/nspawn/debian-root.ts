import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';

// A minimal Debian 12 root made by debootstrap, to boot a real systemd under systemd-nspawn on a
// machine whose own PID 1 is not systemd (DESIGN.md, "Facts checked on these machines"). It is
// made once (~70 s) and kept under /var/tmp/navigator-nspawn/<key>, keyed by suite, mirror and
// package list; every machine boots it read-only with a throwaway overlay (--volatile=overlay),
// so one root serves every test of every run on this machine.
//
// The root holds what the navigator package depends on, so `dpkg -i` needs no network. sshd host
// keys are not part of it: each machine makes its own at its first boot (ssh-hostkeys.service),
// as a freshly installed host would.

export const SUITE = 'bookworm';
/** The navigator package's Depends (depot/install/debian/maintainer-scripts.ts) and what the tests use. */
export const ROOT_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'iproute2', 'iputils-arping', 'openssh-server', 'openssh-client', 'procps', 'libstdc++6', 'libgcc-s1', 'passwd', 'util-linux', 'init-system-helpers', 'curl'];
/** Installed with apt once the root is made: the package depends on polkitd (its rule lets the depot start its containers' units). */
export const LATER_PACKAGES = ['polkitd'];
export const CACHE_DIR = '/var/tmp/navigator-nspawn';
/** Bumped when what is done to the root after debootstrap changes (a new cached root is made). */
const ROOT_REVISION = 2;

/** The Debian mirror apt uses here (deb822 .sources or sources.list), else deb.debian.org. */
export async function aptMirror(): Promise<string> {
  const texts: string[] = [];
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])) {
    if (f.endsWith('.sources') || f.endsWith('.list')) texts.push(await readFile(join('/etc/apt/sources.list.d', f), 'utf8').catch(() => ''));
  }
  texts.push(await readFile('/etc/apt/sources.list', 'utf8').catch(() => ''));
  for (const text of texts) {
    // deb822: a stanza with Types: deb, Suites: bookworm …, URIs: …
    for (const stanza of text.split(/\n\s*\n/)) {
      const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim();
      const uri = field('URIs')?.split(/\s+/)[0];
      if (uri && field('Types')?.split(/\s+/).includes('deb') && field('Suites')?.split(/\s+/).includes(SUITE)) return uri;
    }
    for (const line of text.split('\n')) {
      const m = new RegExp(`^deb\\s+(?:\\[[^\\]]*\\]\\s+)?(\\S+)\\s+${SUITE}\\s`).exec(line.trim());
      if (m) return m[1]!;
    }
  }
  return 'http://deb.debian.org/debian';
}

const HOSTKEYS_UNIT = `[Unit]
Description=Make this machine's sshd host keys (first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
`;

/**
 * The cached root (made if missing, ~70 s): its path. Concurrent callers wait for one build
 * (a lock folder); a half-made root is never used (built aside, then renamed into place).
 */
export async function ensureDebianRoot(log: (msg: string) => void = () => undefined): Promise<string> {
  const mirror = await aptMirror();
  const key = createHash('sha256').update(`${SUITE}\n${mirror}\n${ROOT_PACKAGES.join(',')}\n${LATER_PACKAGES.join(',')}\n${HOSTKEYS_UNIT}\n${ROOT_REVISION}`).digest('hex').slice(0, 12);
  const dir = join(CACHE_DIR, `${SUITE}-${key}`);
  const root = join(dir, 'root');
  if (existsSync(join(root, 'etc', 'navigator-test-root'))) return root;
  await mkdir(CACHE_DIR, { recursive: true });
  const lock = `${dir}.lock`;
  for (let waited = 0; ; waited += 1000) {
    try {
      await mkdir(lock);
      break;
    } catch {
      const owner = Number(await readFile(join(lock, 'pid'), 'utf8').catch(() => '0'));
      if (owner > 0 && !existsSync(`/proc/${owner}`)) await rm(lock, { recursive: true, force: true });
      else if (waited > 600_000) throw new NavigatorError('TIMEOUT', `waited 10 min for another process to make ${root}`);
      else await new Promise((r) => setTimeout(r, 1000));
      if (existsSync(join(root, 'etc', 'navigator-test-root'))) return root;
    }
  }
  try {
    await writeFile(join(lock, 'pid'), String(process.pid));
    if (existsSync(join(root, 'etc', 'navigator-test-root'))) return root;
    const tmp = `${dir}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    log(`debootstrap ${SUITE} from ${mirror} into ${tmp} (once; ~70 s)`);
    const r = await execa('debootstrap', ['--variant=minbase', `--include=${ROOT_PACKAGES.join(',')}`, SUITE, join(tmp, 'root'), mirror], { reject: false, all: true, timeout: 900_000 });
    if (r.exitCode !== 0) {
      await rm(tmp, { recursive: true, force: true });
      throw new NavigatorError('COMMAND_FAILED', `debootstrap failed (${r.exitCode}): ${String(r.all).split('\n').slice(-15).join('\n')}`);
    }
    const t = join(tmp, 'root');
    // polkitd fails debootstrap's base configuration (its postinst); apt in the finished root installs it.
    const apt = await execa('chroot', [t, 'sh', '-c', `apt-get update -qq && apt-get install -y -qq --no-install-recommends ${LATER_PACKAGES.join(' ')} && apt-get clean`], { reject: false, all: true, timeout: 600_000, env: { DEBIAN_FRONTEND: 'noninteractive' } });
    if (apt.exitCode !== 0 || !existsSync(join(t, 'usr', 'lib', 'polkit-1', 'polkitd'))) {
      await rm(tmp, { recursive: true, force: true });
      throw new NavigatorError('COMMAND_FAILED', `apt-get install ${LATER_PACKAGES.join(' ')} in the Debian root failed (${apt.exitCode}): ${String(apt.all).split('\n').slice(-15).join('\n')}`);
    }
    // Host keys and identity are per machine.
    for (const f of await readdir(join(t, 'etc', 'ssh'))) if (f.startsWith('ssh_host_')) await rm(join(t, 'etc', 'ssh', f));
    await rm(join(t, 'etc', 'hostname'), { force: true });
    // Nothing to remount in a machine whose root is nspawn's overlay (systemd-remount-fs failed
    // now and then on "# UNCONFIGURED FSTAB"; without the file it is skipped).
    await rm(join(t, 'etc', 'fstab'), { force: true });
    await writeFile(join(t, 'etc', 'machine-id'), '');
    await writeFile(join(t, 'etc', 'systemd', 'system', 'ssh-hostkeys.service'), HOSTKEYS_UNIT);
    await mkdir(join(t, 'etc', 'systemd', 'system', 'ssh.service.wants'), { recursive: true });
    await symlink('/etc/systemd/system/ssh-hostkeys.service', join(t, 'etc', 'systemd', 'system', 'ssh.service.wants', 'ssh-hostkeys.service'));
    await writeFile(join(t, 'etc', 'navigator-test-root'), `${SUITE} ${mirror} ${new Date().toISOString()}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    log(`Debian root ready: ${root}`);
    return root;
  } catch (err) {
    throw new NavigatorError('COMMAND_FAILED', `could not make the Debian root for systemd-nspawn: ${errorMessage(err)}`);
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
