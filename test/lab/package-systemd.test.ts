import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../lab/lab.ts';
import { ensurePackage, startPackageHosts, writeEchoImage, type PackageHost } from '../../lab/nspawn/package-lab.ts';
import { waitFor } from '../../lab/cluster.ts';
import { DEPOT_ENV } from '../../depot/runtime-flags.ts';

// The package under a real systemd: a Debian machine booted under systemd-nspawn on a lab
// workstation. dpkg -i enables and starts the unit; it runs as navigator with only NET_ADMIN and
// NET_RAW; a crash (kill -9) is restarted; `systemctl restart` leaves the running service
// container alone; `systemctl stop` is clean; remove stops the container too. The service
// container runs as navigator-svc in a unit of its own (navigator-ctr@*.service) with the
// configured limits, no capability, none of the depot's environment, and cannot read the depot's
// keys; kill -9 and `systemctl restart` of the depot (KillMode=control-group) leave its process
// alone and the new depot adopts it; its primary-only command (a unit of its own too) is stopped
// by the unprivileged depot when it demotes.

let lab: Lab | undefined;
let hosts: PackageHost[] = [];

afterEach(async () => {
  await Promise.all(hosts.map((h) => h.machine.stop().catch(() => undefined)));
  hosts = [];
  await lab?.destroy();
  lab = undefined;
});

describe('the navigator package under systemd', () => {
  it('starts on install, runs confined, restarts after a crash, keeps the service container across a restart, stops cleanly', async () => {
    const pkg = await ensurePackage();
    lab = await Lab.create({ workstations: 1 });
    hosts = await startPackageHosts(lab, ['w1']);
    const w1 = hosts[0]!;
    const t0 = performance.now();
    await w1.install(pkg.file);
    await waitFor(async () => (await w1.api<{ ok: boolean }>('/healthz'))?.ok === true, 30_000, 'the depot started by dpkg -i to answer /healthz');
    const startedMs = performance.now() - t0;
    expect(await w1.unitProperty('UnitFileState')).toBe('enabled');
    expect(await w1.unitProperty('ActiveState')).toBe('active');

    // Confined: its user, two capabilities, no way to gain more.
    const pid1 = Number(await w1.unitProperty('MainPID'));
    const status = await readFile(w1.machine.path(`/proc/${pid1}/status`), 'utf8');
    const field = (k: string) => new RegExp(`^${k}:\\s+(.*)$`, 'm').exec(status)?.[1];
    const uid = Number((await w1.exec(['id', '-u', 'navigator'])).stdout);
    expect(field('Uid')!.split(/\s+/).map(Number)).toEqual([uid, uid, uid, uid]);
    for (const k of ['CapEff', 'CapAmb', 'CapBnd']) expect(field(k), k).toBe('0000000000003000');
    expect(field('NoNewPrivs')).toBe('1');

    // A service container to keep: one copy, primary, holding the service address.
    await w1.configure({ 'http.adminToken': 'lab-admin-token', 'containers.limits': { cpuWeight: 7, cpuMax: 1.5, memoryMax: 268435456, ioWeight: 9 } });
    await w1.systemctl('restart', 'navigator-depot.service');
    await waitFor(async () => (await w1.api<{ ok: boolean }>('/healthz'))?.ok === true, 30_000, 'the depot back after the config change');
    await writeEchoImage(w1, '/srv/echo', 7000, { oneShots: true });
    const ip = lab.serviceAddress(0).split('/')[0]!;
    await w1.exec(['navigator', 'pilot', 'bootstrap', '--service', 'echo', '--image', '/srv/echo', '--address', lab.serviceAddress(0), '--iface', 'eth0', '--port', '7000', '--standbys', '0', '--config', '/etc/navigator/navigator.yaml', '--timeout', '60'], { timeoutMs: 90_000 });
    await waitFor(async () => (await lab!.holders(ip)).join() === 'w1', 10_000, 'w1 to hold the service address');
    const echoPid = async () => (await w1.exec(['pgrep', '-u', 'navigator-svc', '-f', 'echo-service.ts'], { reject: false })).stdout.trim();
    const echo = await echoPid();
    expect(echo).toMatch(/^\d+$/);

    // Isolated: a unit of its own as navigator-svc, with the configured limits.
    const ctrUnits = async () => (await w1.exec(['systemctl', 'list-units', '--all', '--plain', '--no-legend', 'navigator-ctr@*'])).stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0]!);
    // start0 is a one-shot step (navigator-ctr-once@, gone once done), start1 the echo server,
    // primary0 the primary-only command.
    await waitFor(async () => (await ctrUnits()).length === 2, 10_000, 'the primary-only command to start');
    const [primaryUnit, unit] = await ctrUnits();
    expect(unit).toMatch(/^navigator-ctr@[A-Za-z0-9_.-]+:start1\.service$/);
    expect(primaryUnit).toBe(unit!.replace(':start1.', ':primary0.'));
    const ctr = async (p: string) => (await w1.exec(['systemctl', 'show', '-p', p, '--value', unit!])).stdout.trim();
    expect(await ctr('MainPID')).toBe(echo);
    expect(await ctr('ActiveState')).toBe('active');
    expect(await ctr('User')).toBe('navigator-svc');
    expect(await ctr('ControlGroup')).toBe(`/system.slice/system-navigator\\x2dctr.slice/${unit}`);
    expect((await w1.exec(['systemctl', 'show', '-p', 'User', '--value', primaryUnit!])).stdout.trim()).toBe('navigator-svc');
    expect(await ctr('CPUWeight')).toBe('7');
    expect(await ctr('IOWeight')).toBe('9');
    expect(await ctr('MemoryMax')).toBe('268435456');
    expect(await ctr('CPUQuotaPerSecUSec')).toMatch(/^1\.5(0*)s$/);
    // No capability, none of the depot's environment.
    const svcUid = Number((await w1.exec(['id', '-u', 'navigator-svc'])).stdout);
    const echoStatus = await readFile(w1.machine.path(`/proc/${echo}/status`), 'utf8');
    const echoField = (k: string) => new RegExp(`^${k}:\\s+(.*)$`, 'm').exec(echoStatus)?.[1];
    expect(echoField('Uid')!.split(/\s+/).map(Number)).toEqual([svcUid, svcUid, svcUid, svcUid]);
    for (const k of ['CapEff', 'CapPrm', 'CapAmb', 'CapBnd']) expect(echoField(k), k).toBe('0000000000000000');
    const env = (await readFile(w1.machine.path(`/proc/${echo}/environ`), 'utf8')).split('\0').filter(Boolean).map((e) => e.split('=')[0]!);
    expect(env).toEqual(expect.arrayContaining(['PATH', 'HOME', 'LANG']));
    for (const k of ['NODE_ENV', ...Object.keys(DEPOT_ENV)]) expect(env, k).not.toContain(k);
    // The one-shot step ran as navigator-svc too, with only the minimal environment (its health
    // checks are one-shot steps as well: the container became healthy through them).
    const dataDir = `/var/lib/navigator-store/containers/${/@([^:]+):/.exec(unit!)![1]}/data`;
    expect((await readFile(w1.machine.path(`${dataDir}/ran-as`), 'utf8')).trim()).toBe('navigator-svc');
    const stepEnv = (await readFile(w1.machine.path(`${dataDir}/env`), 'utf8')).split('\n').filter(Boolean).map((l) => l.split('=')[0]!);
    expect(stepEnv).toEqual(expect.arrayContaining(['PATH', 'HOME', 'LANG']));
    for (const k of ['NODE_ENV', 'INVOCATION_ID', ...Object.keys(DEPOT_ENV)]) expect(stepEnv, k).not.toContain(k);
    // The swarm key, the depot's identity and SSH keys are out of its reach.
    for (const f of ['/etc/navigator/swarm.key', '/var/lib/navigator/identity.key', '/var/lib/navigator/ssh/id_ed25519']) {
      expect((await w1.exec(['test', '-s', f])).exitCode, `${f} exists`).toBe(0);
      const r = await w1.exec(['runuser', '-u', 'navigator-svc', '--', 'cat', f], { reject: false });
      expect(r.exitCode, f).not.toBe(0);
      expect(r.stderr, f).toContain('Permission denied');
    }

    // kill -9: systemd starts it again (Restart=always), the container keeps running, the copy serves again.
    const before = Number(await w1.unitProperty('MainPID'));
    const tCrash = performance.now();
    await w1.exec(['kill', '-9', String(before)]);
    await waitFor(async () => {
      const pid = Number(await w1.unitProperty('MainPID'));
      return pid > 0 && pid !== before && (await w1.api<{ ok: boolean }>('/healthz'))?.ok === true;
    }, 30_000, 'systemd to restart the killed depot');
    const restartMs = performance.now() - tCrash;
    expect(await w1.unitProperty('NRestarts')).toBe('1');
    expect(await echoPid()).toBe(echo);
    await waitFor(async () => (await lab!.holders(ip)).join() === 'w1', 20_000, 'the restarted depot to serve its copy again');
    expect(await ctrUnits()).toContain(unit);
    expect(await ctr('MainPID')).toBe(echo);

    // systemctl restart: the depot stops cleanly and starts again; the container is the same process.
    const tRestart = performance.now();
    const r = await w1.systemctl('restart', 'navigator-depot.service');
    expect(r.exitCode, r.stderr).toBe(0);
    const restartCmdMs = performance.now() - tRestart;
    await waitFor(async () => (await w1.api<{ ok: boolean }>('/healthz'))?.ok === true, 30_000, 'the depot after systemctl restart');
    expect(await echoPid()).toBe(echo);
    await waitFor(async () => (await lab!.holders(ip)).join() === 'w1', 20_000, 'the copy serving after the restart');
    // Adopted, not started again: the same unit and process, and the new depot reports it running.
    expect(await ctrUnits()).toContain(unit);
    expect(await ctr('MainPID')).toBe(echo);
    expect((await w1.depotEvents()).filter((e) => e.event === 'container-unit-started' && e.unit === unit)).toHaveLength(1);

    // systemctl stop: clean (exit 0, no kill needed), `left` announced, the address dropped.
    const tStop = performance.now();
    expect((await w1.systemctl('stop', 'navigator-depot.service')).exitCode).toBe(0);
    const stopMs = performance.now() - tStop;
    expect(await w1.unitProperty('ActiveState')).toBe('inactive');
    expect(await w1.unitProperty('Result')).toBe('success');
    expect(await w1.unitProperty('ExecMainStatus')).toBe('0');
    expect(await lab.holders(ip)).toEqual([]);
    // Demoted on the way out: the primary-only command's unit is stopped (systemctl kill by the
    // unprivileged depot, through the polkit rule); the container itself keeps running.
    await waitFor(async () => (await ctrUnits()).join() === unit, 10_000, 'the primary-only unit to stop');
    expect(await ctr('MainPID')).toBe(echo);
    expect((await w1.depotEvents()).filter((e) => e.event === 'depot-stopped').at(-1)).toMatchObject({ announced: true });

    // Remove: nothing of it keeps running.
    await w1.exec(['dpkg', '-r', 'navigator'], { timeoutMs: 120_000 });
    expect((await w1.exec(['pgrep', '-u', 'navigator'], { reject: false })).exitCode).toBe(1);
    expect((await w1.exec(['pgrep', '-u', 'navigator-svc'], { reject: false })).exitCode).toBe(1);
    expect(await ctrUnits()).toEqual([]);
    expect((await w1.systemctl('status', 'navigator-depot.service')).exitCode).not.toBe(0);
    await w1.exec(['dpkg', '--purge', 'navigator'], { timeoutMs: 120_000 });
    console.log(`systemd: dpkg -i to /healthz ${Math.round(startedMs)} ms; kill -9 to serving again ${Math.round(restartMs)} ms; systemctl restart ${Math.round(restartCmdMs)} ms; systemctl stop ${Math.round(stopMs)} ms`);
  }, 300_000);
});
