import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { Lab } from '../../lab/lab.ts';
import type { LoggedProcess } from '../../lab/logged-process.ts';
import { PKG_DIR, ensurePackage, startPackageHosts, writeEchoImage, type PackageHost } from '../../lab/nspawn/package-lab.ts';
import { waitFor } from '../../lab/cluster.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';

// The Debian package as an admin gets it, on Debian machines (systemd-nspawn) in the namespace
// lab, without systemd running (a chroot install: nothing is started for us): what dpkg-deb says
// it holds; what dpkg -i makes; the unit's exact ExecStart run as its User= with its Environment=
// and ambient capabilities (setpriv) — the issue's bug was that this very command could not read
// its own config; two such depots find each other; one moves a service address in its namespace;
// then remove and purge, and nothing is left behind but what purge keeps by design (nothing).

let lab: Lab | undefined;
let hosts: PackageHost[] = [];
const procs: Array<{ p: LoggedProcess; on: PackageHost }> = [];

afterEach(async () => {
  await Promise.all(procs.splice(0).map(({ p, on }) => on.machine.stopSpawned(p, 'node', 3000).catch(() => undefined)));
  await Promise.all(hosts.map((h) => h.machine.stop().catch(() => undefined)));
  hosts = [];
  await lab?.destroy();
  lab = undefined;
});

/** The unit's command, user, environment and capabilities, as systemd would run them. */
function unitCommand(unit: string): { user: string; group: string; env: string[]; ambient: string[]; bounding: string[]; argv: string[] } {
  const values = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
  const one = (key: string) => {
    const v = values(key);
    if (v.length !== 1) throw new Error(`unit has ${v.length} ${key}= lines`);
    return v[0]!;
  };
  const caps = (key: string) => one(key).split(/\s+/).map((c) => c.replace(/^CAP_/, '').toLowerCase());
  return { user: one('User'), group: one('Group'), env: values('Environment'), ambient: caps('AmbientCapabilities'), bounding: caps('CapabilityBoundingSet'), argv: one('ExecStart').split(/\s+/) };
}

/** Paths, owners and modes of a machine's root file system, minus what changes by itself. */
async function snapshot(h: PackageHost): Promise<string[]> {
  const r = await h.exec(['find', '/', '-xdev', '(', '-path', '/var/lib/dpkg', '-o', '-path', '/var/log', '-o', '-path', '/var/cache', '-o', '-path', '/tmp', '-o', '-path', '/var/tmp', '-o', '-path', '/root', ')', '-prune', '-o', '-printf', '%p %u %g %m\\n']);
  // useradd/userdel keep backups (/etc/passwd- …) of the files they edit.
  return r.stdout.split('\n').filter((l) => l && !/^\/etc\/(passwd|group|shadow|gshadow|subuid|subgid)- /.test(l)).sort();
}

describe('the navigator package installed without systemd', () => {
  it('holds what it should; dpkg -i sets it up; the unit command as its user with its capabilities runs a depot that joins another and moves an address; purge leaves nothing', async () => {
    const t0 = performance.now();
    const pkg = await ensurePackage();
    const built = performance.now();
    const deb = join(PKG_DIR, pkg.file);

    // What dpkg-deb says.
    const info = (await execa('dpkg-deb', ['--info', deb])).stdout;
    expect(info).toMatch(/^ Package: navigator$/m);
    expect(info).toMatch(new RegExp(`^ Version: ${pkg.version.replace(/[.+]/g, '\\$&')}$`, 'm'));
    expect(info).toMatch(/^ Architecture: amd64$/m);
    expect(info).toMatch(/^ Depends: .*openssh-server.*iproute2.*iputils-arping/m);
    for (const script of ['postinst', 'prerm', 'postrm', 'conffiles']) expect(info).toContain(` ${script} `);
    const contents = (await execa('dpkg-deb', ['--contents', deb])).stdout.split('\n').map((l) => {
      const f = l.split(/\s+/);
      return { mode: f[0]!, owner: f[1]!, path: f.slice(5).join(' ') };
    });
    const entry = (path: string) => contents.find((c) => c.path === path);
    expect(contents.every((c) => c.owner === 'root/root')).toBe(true);
    for (const [path, mode] of [
      ['./usr/bin/navigator', '-rwxr-xr-x'],
      ['./usr/lib/navigator/bin/node', '-rwxr-xr-x'],
      ['./usr/lib/navigator/bin/navigator.mjs', '-rwxr-xr-x'],
      ['./usr/lib/navigator/dist/PACKAGED', '-rw-r--r--'],
      ['./usr/lib/navigator/package.json', '-rw-r--r--'],
      ['./usr/lib/navigator/web/page/index.html', '-rw-r--r--'],
      ['./usr/lib/navigator/pilot/fence-guard-process.ts', '-rw-r--r--'],
      ['./usr/lib/navigator/node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node', '-rwxr-xr-x'],
      ['./usr/lib/navigator/node_modules/execa/package.json', '-rw-r--r--'],
      ['./lib/systemd/system/navigator-depot.service', '-rw-r--r--'],
      ['./lib/systemd/system/navigator-ctr@.service', '-rw-r--r--'],
      ['./lib/systemd/system/navigator-ctr-once@.service', '-rw-r--r--'],
      ['./etc/ssh/sshd_config.d/navigator.conf', '-rw-r--r--'],
      ['./usr/share/polkit-1/rules.d/50-navigator.rules', '-rw-r--r--'],
      ['./usr/share/doc/navigator/README.md', '-rw-r--r--'],
      ['./usr/share/doc/navigator/examples/zabbix/container.yaml', '-rw-r--r--'],
    ] as const) {
      expect(entry(path)?.mode, path).toBe(mode);
    }
    // State is the postinst's to make, and no source tree, test or build tool is shipped.
    expect(contents.filter((c) => /^\.\/(var|etc\/navigator)\//.test(c.path))).toEqual([]);
    expect(contents.filter((c) => /^\.\/usr\/lib\/navigator\/(test|bench|lab|depot|shared|cli|demo)\/|node_modules\/(esbuild|tsx|vitest|typescript|libp2p)\//.test(c.path))).toEqual([]);

    lab = await Lab.create({ workstations: 2 });
    hosts = await startPackageHosts(lab, ['w1', 'w2'], { boot: false });
    const [w1, w2] = hosts as [PackageHost, PackageHost];
    const before = await snapshot(w1);

    // dpkg -i on the first host makes the swarm key; the admin copies it to the second first.
    const out = await w1.install(pkg.file);
    expect(out.stdout).toContain('created /etc/navigator/swarm.key');
    await w2.writeFile('/etc/navigator/swarm.key', await readFile(w1.machine.path('/etc/navigator/swarm.key')), 0o600);
    expect((await w2.install(pkg.file)).stdout).not.toContain('created /etc/navigator/swarm.key');
    expect(await readFile(w2.machine.path('/etc/navigator/swarm.key'), 'utf8')).toBe(await readFile(w1.machine.path('/etc/navigator/swarm.key'), 'utf8'));
    for (const h of hosts) {
      const ls = (await h.exec(['stat', '-c', '%n %U:%G %a', '/etc/navigator', '/etc/navigator/navigator.yaml', '/etc/navigator/swarm.key', '/var/lib/navigator', '/var/lib/navigator/ssh/id_ed25519', '/var/lib/navigator-store', '/var/lib/navigator-store/staging'])).stdout;
      expect(ls.split('\n')).toEqual([
        '/etc/navigator root:navigator 750',
        '/etc/navigator/navigator.yaml root:navigator 640',
        '/etc/navigator/swarm.key root:navigator 640',
        '/var/lib/navigator navigator:navigator 750',
        '/var/lib/navigator/ssh/id_ed25519 navigator:navigator 600',
        '/var/lib/navigator-store root:root 755',
        '/var/lib/navigator-store/staging navigator:navigator-recv 2750',
      ]);
      expect((await h.exec(['getent', 'passwd', 'navigator', 'navigator-svc', 'navigator-recv'])).stdout.split('\n')).toHaveLength(3);
      // No systemd here: the postinst started nothing.
      expect((await h.exec(['pgrep', '-u', 'navigator'], { reject: false })).exitCode).toBe(1);
    }
    const installed = performance.now();
    await w1.configure({ 'http.adminToken': 'lab-admin-token' });

    // The unit's exact command, as its user, with its environment and capabilities.
    const unit = unitCommand(await readFile(w1.machine.path('/lib/systemd/system/navigator-depot.service'), 'utf8'));
    expect(unit).toMatchObject({ user: 'navigator', group: 'navigator', ambient: ['net_admin', 'net_raw'], bounding: ['net_admin', 'net_raw'] });
    const caps = unit.ambient.map((c) => `+${c}`).join(',');
    const argv = [
      'setpriv', `--reuid=${unit.user}`, `--regid=${unit.group}`, '--init-groups', `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${unit.bounding.map((c) => `+${c}`).join(',')}`, '--no-new-privs',
      '--', '/usr/bin/env', '-i', 'PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/var/lib/navigator', `USER=${unit.user}`, `LOGNAME=${unit.user}`, ...unit.env, ...unit.argv,
    ];
    for (const h of hosts) {
      const p = h.machine.spawn(argv, join(lab.dir, 'logs', `${h.name}-depot.log`), 'depot');
      procs.push({ p, on: h });
      await p.waitForLine(/"event":"depot-started"/, 30_000);
    }
    for (const h of hosts) expect(await h.api('/healthz')).toMatchObject({ ok: true, name: h.name, version: pkg.version });
    await waitFor(async () => (await w1.api<DepotsResponse>('/api/depots'))?.depots.filter((d) => d.state === 'alive').length === 2, 30_000, 'w1 and w2 to find each other (mDNS)');
    const depotPid = (await w1.machine.innerPid(procs[0]!.p, 'node'))!;
    const status = await readFile(`/proc/${depotPid}/status`, 'utf8');
    const field = (k: string) => new RegExp(`^${k}:\\s+(.*)$`, 'm').exec(status)?.[1];
    const uid = Number((await w1.exec(['id', '-u', 'navigator'])).stdout);
    expect(field('Uid')!.split(/\s+/).map(Number)).toEqual([uid, uid, uid, uid]);
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else, and no way to gain more.
    for (const k of ['CapEff', 'CapAmb', 'CapBnd']) expect(field(k), k).toBe('0000000000003000');
    expect(field('NoNewPrivs')).toBe('1');

    // The depot moves a service address in its namespace: bootstrap takes it, a clean stop drops it.
    await writeEchoImage(w1, '/srv/echo', 7000);
    const ip = lab.serviceAddress(0).split('/')[0]!;
    await w1.exec(['navigator', 'pilot', 'bootstrap', '--service', 'echo', '--image', '/srv/echo', '--address', lab.serviceAddress(0), '--iface', 'eth0', '--port', '7000', '--standbys', '0', '--config', '/etc/navigator/navigator.yaml', '--timeout', '60'], { timeoutMs: 90_000 });
    await waitFor(async () => (await lab!.holders(ip)).join() === 'w1', 10_000, 'w1 to hold the service address');
    const echoed = await lab.exec('client', ['bash', '-c', `exec 3<>/dev/tcp/${ip}/7000 && head -1 <&3`]);
    expect(echoed.stdout.trim()).toBe('w1');
    process.kill(depotPid, 'SIGTERM');
    expect(await procs[0]!.p.exited).toMatchObject({ exitCode: 0 });
    expect(await lab.holders(ip)).toEqual([]);
    await w2.machine.stopSpawned(procs[1]!.p, 'node');
    const ran = performance.now();

    // Remove keeps configuration, keys and images, stops what the depot ran, and shuts the receive account.
    await w1.exec(['dpkg', '-r', 'navigator'], { timeoutMs: 120_000 });
    const exists = async (p: string) => (await w1.exec(['test', '-e', p], { reject: false })).exitCode === 0;
    for (const p of ['/usr/lib/navigator', '/usr/bin/navigator', '/lib/systemd/system/navigator-depot.service', '/var/lib/navigator/ssh/authorized_keys']) expect(await exists(p), p).toBe(false);
    for (const p of ['/etc/navigator/navigator.yaml', '/etc/navigator/swarm.key', '/etc/ssh/sshd_config.d/navigator.conf', '/var/lib/navigator/ssh/id_ed25519', '/var/lib/navigator-store/images']) expect(await exists(p), p).toBe(true);
    expect((await w1.exec(['ls', '/var/lib/navigator-store/images'])).stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
    expect((await w1.exec(['pgrep', '-u', 'navigator'], { reject: false })).exitCode).toBe(1);
    // Purge: back to the machine as it was before the install, users included.
    await w1.exec(['dpkg', '--purge', 'navigator'], { timeoutMs: 120_000 });
    await w1.exec(['rm', '-r', '/srv/echo']); // the admin's image folder, not the package's
    expect(await snapshot(w1)).toEqual(before);
    expect((await w1.exec(['getent', 'passwd', 'navigator', 'navigator-svc', 'navigator-recv'], { reject: false })).stdout).toBe('');
    console.log(
      `package ${pkg.file}: ready in ${Math.round(built - t0)} ms; two installs ${Math.round(installed - built)} ms (machines included); depots, join, address ${Math.round(ran - installed)} ms; remove+purge ${Math.round(performance.now() - ran)} ms`,
    );
  }, 300_000);
});
