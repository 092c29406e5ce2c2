import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { parseDocument } from 'yaml';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { ensureBuild } from '../../bin/build.mjs';
import { buildDebianPackage } from '../../depot/install/debian/build-deb.ts';
import type { Lab } from '../lab.ts';
import { ensureDebianRoot } from './debian-root.ts';
import { Machine, type MachineExec } from './machine.ts';

// Lab workstations installed the way an admin installs them: a Debian machine under
// systemd-nspawn in each lab namespace (its own root, users, sshd and, booted, its own systemd),
// and the navigator package installed with dpkg. Nothing of Navigator runs from this checkout
// inside them. The packages are built once per bundled build and version into out/test/.

export const PKG_DIR = join(REPO_ROOT, 'out', 'test');
/** Where the machines see PKG_DIR. */
export const PKG_MOUNT = '/mnt/pkg';
export const HTTP_PORT = 7480;

/** navigator_<version>_amd64.deb for the current sources (built when missing or stale): its name in PKG_DIR. */
export async function ensurePackage(version?: string): Promise<{ file: string; version: string }> {
  const build = await ensureBuild();
  if (!build.dir) throw new Error(`bundled build failed: ${build.error}`);
  const id = basename(build.dir);
  const v = version ?? (JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const file = `navigator_${v}_amd64.deb`;
  const stamp = join(PKG_DIR, `${file}.build`);
  if (existsSync(join(PKG_DIR, file)) && (await readFile(stamp, 'utf8').catch(() => '')) === id) return { file, version: v };
  await mkdir(PKG_DIR, { recursive: true });
  await buildDebianPackage({ outDir: PKG_DIR, version: v });
  await writeFile(stamp, id);
  return { file, version: v };
}

/** A lab workstation that is a Debian machine. */
export class PackageHost {
  constructor(
    readonly lab: Lab,
    readonly name: string,
    readonly machine: Machine,
  ) {}

  get ip(): string {
    return this.lab.host(this.name).ip;
  }

  exec(argv: readonly string[], opts: Parameters<Machine['exec']>[1] = {}): Promise<MachineExec> {
    return this.machine.exec(argv, opts);
  }

  /** `dpkg -i` of a package in PKG_DIR. */
  install(file: string): Promise<MachineExec> {
    return this.exec(['dpkg', '-i', `${PKG_MOUNT}/${file}`], { timeoutMs: 180_000 });
  }

  /** GET the depot's API from the lab's client namespace (as another host on the LAN would). */
  async api<T>(path: string): Promise<T | undefined> {
    const r = await this.lab.exec('client', ['curl', '-sf', '--max-time', '2', `http://${this.ip}:${HTTP_PORT}${path}`], { reject: false });
    if (r.exitCode !== 0 || !r.stdout) return undefined;
    return JSON.parse(r.stdout) as T;
  }

  /** Set fields of /etc/navigator/navigator.yaml, keeping its comments (an admin's edit). */
  async configure(fields: Record<string, unknown>): Promise<void> {
    const file = this.machine.path('/etc/navigator/navigator.yaml');
    const doc = parseDocument(await readFile(file, 'utf8'));
    for (const [path, value] of Object.entries(fields)) doc.setIn(path.split('.'), value);
    await writeFile(file, doc.toString());
  }

  /** Write a file inside the machine (mode, owned by root). */
  async writeFile(path: string, text: string | Buffer, mode = 0o644): Promise<void> {
    await mkdir(join(this.machine.path(path), '..'), { recursive: true });
    await writeFile(this.machine.path(path), text, { mode });
  }

  /** The depot's log lines (JSON events) from the machine's journal. */
  async depotEvents(): Promise<Array<Record<string, unknown> & { event?: string }>> {
    const out: Array<Record<string, unknown>> = [];
    for (const line of (await this.machine.journal('navigator-depot.service')).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by the journal's size limit
      }
    }
    return out;
  }

  async systemctl(...args: string[]): Promise<MachineExec> {
    return this.exec(['systemctl', ...args], { reject: false, timeoutMs: 150_000 });
  }

  async unitProperty(name: string): Promise<string> {
    return (await this.exec(['systemctl', 'show', '-p', name, '--value', 'navigator-depot.service'])).stdout.trim();
  }
}

/** Debian machines on lab workstations `names`, booted unless `boot: false`. */
export async function startPackageHosts(lab: Lab, names: readonly string[], opts: { boot?: boolean } = {}): Promise<PackageHost[]> {
  const root = await ensureDebianRoot();
  await mkdir(PKG_DIR, { recursive: true });
  const started = await Promise.allSettled(
    names.map(async (name) => {
      const machine = await Machine.start({
        root,
        name,
        boot: opts.boot !== false,
        netns: `/run/netns/${lab.host(name).ns}`,
        bindRo: [{ host: PKG_DIR, guest: PKG_MOUNT }],
        logPath: join(lab.dir, 'logs', `${name}-machine.log`),
      });
      return new PackageHost(lab, name, machine);
    }),
  );
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    // None is left running when one did not come up.
    await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.machine.stop().catch(() => undefined) : undefined)));
    throw failed.reason;
  }
  return started.map((s) => (s as PromiseFulfilledResult<PackageHost>).value);
}

/** The receiving sshd's answer to an SFTP login as the receive account with `from`'s depot key. */
export async function sftpLogin(from: PackageHost, to: PackageHost): Promise<MachineExec> {
  return from.exec(
    [
      'sftp',
      '-b',
      '-',
      '-i',
      '/var/lib/navigator/ssh/id_ed25519',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'ConnectTimeout=5',
      `navigator-recv@${to.ip}`,
    ],
    { reject: false, input: 'pwd\n', timeoutMs: 20_000 },
  );
}

/**
 * The lab's echo service as an image folder inside a machine, run by the package's Node (type
 * stripping: no tsx there); it answers with the host name. World-readable: the depot imports it.
 */
export async function writeEchoImage(h: PackageHost, dir: string, port: number, opts: { oneShots?: boolean } = {}): Promise<void> {
  await h.writeFile(`${dir}/echo-service.ts`, await readFile(join(REPO_ROOT, 'lab', 'echo-service.ts')));
  // oneShots: a wait step that notes who it ran as, and a health check that is a command (both
  // one-shot steps, in navigator-ctr-once@ units under systemd), and a primary-only command.
  const probe = `require('net').connect(${port}, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`;
  await h.writeFile(
    `${dir}/container.yaml`,
    [
      'name: echo',
      'start:',
      ...(opts.oneShots ? [`  - argv: [/bin/sh, -c, 'id -un > "$0/ran-as"; env > "$0/env"', '\${dataDir}']`, '    wait: true'] : []),
      `  - argv: [/usr/lib/navigator/bin/node, --no-warnings, "\${dir}/echo-service.ts", --port, "${port}"]`,
      // A primary-only command: its own unit while this copy is primary.
      ...(opts.oneShots ? ['primary:', '  - argv: [/bin/sleep, infinity]'] : []),
      'health:',
      ...(opts.oneShots ? [`  command: [/usr/lib/navigator/bin/node, -e, ${JSON.stringify(probe)}]`] : [`  tcp: { host: 127.0.0.1, port: ${port} }`]),
      'startTimeoutMs: 20000',
      '',
    ].join('\n'),
  );
}
