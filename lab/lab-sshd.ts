import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Lab, LabProcess } from './lab.ts';
import { sshdConfig } from './loopback/sshd.ts';

// A real OpenSSH sshd in each workstation namespace of the lab, on the host's own address and
// port 22, for image shipping between lab depots. One user key (the depots' shipping key,
// authorized on every host) and one host key per host; known_hosts files are written by the
// test: the right pins, or deliberately wrong ones.

export interface LabSsh {
  /** Private key the depots ship with (ship.sshKeyFile). */
  userKeyFile: string;
  /** Host public key per host ("ssh-ed25519 AAAA..."). */
  hostKeys: Map<string, string>;
  sshds: Map<string, LabProcess>;
  /** known_hosts text pinning every host's real key (`IP ssh-ed25519 ...`, port 22). */
  knownHosts(): string;
  /** known_hosts text pinning each host to another host's key: every connection is refused as changed. */
  wrongKnownHosts(): string;
}

async function keygen(file: string): Promise<void> {
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'navigator-lab', '-f', file]);
}

export async function startLabSshds(lab: Lab, hosts: readonly string[]): Promise<LabSsh> {
  const dir = join(lab.dir, 'ssh');
  await mkdir(dir, { recursive: true });
  // sshd refuses to start without its privilege separation folder.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const userKeyFile = join(dir, 'id_ed25519');
  await keygen(userKeyFile);
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${userKeyFile}.pub`), { mode: 0o600 });
  const hostKeys = new Map<string, string>();
  const sshds = new Map<string, LabProcess>();
  for (const host of hosts) {
    const hostKey = join(dir, `host_${host}`);
    await keygen(hostKey);
    hostKeys.set(host, (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' '));
    const configFile = join(dir, `sshd_${host}.config`);
    await writeFile(
      configFile,
      sshdConfig({
        port: 22,
        listen: lab.host(host).ip,
        hostKey,
        pidFile: join(dir, `sshd_${host}.pid`),
        authorizedKeys: join(dir, 'authorized_keys'),
        logLevel: 'INFO',
      }).join('\n') + '\n',
    );
    const p = lab.spawn(host, ['/usr/sbin/sshd', '-D', '-e', '-f', configFile], { name: 'sshd' });
    await p.waitForLine(/Server listening on/, 10_000);
    sshds.set(host, p);
  }
  const line = (host: string, key: string) => `${lab.host(host).ip} ${key}`;
  return {
    userKeyFile,
    hostKeys,
    sshds,
    knownHosts: () => hosts.map((h) => line(h, hostKeys.get(h)!)).join('\n') + '\n',
    wrongKnownHosts: () => hosts.map((h, i) => line(h, hostKeys.get(hosts[(i + 1) % hosts.length]!)!)).join('\n') + '\n',
  };
}
