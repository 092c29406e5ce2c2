// bench:ship — image shipping over a real OpenSSH sshd on loopback, beside OpenSSH scp of the
// same file to the same server with the same key and cipher.
//
//   npm run bench:ship                     1 GiB image, 3 alternating trials
//   BENCH_SHIP_MB=256 BENCH_SHIP_TRIALS=2 npm run bench:ship
//   BENCH_SHIP_CONNECTIONS=1 / BENCH_SHIP_INFLIGHT=64 / BENCH_SHIP_CIPHER=chacha20-poly1305@openssh.com
//
// Prints a table, then one JSON line. navigator_mb_s counts SSH connect + login + SFTP transfer
// (what scp does, less its process start); the target's prepare and verification (commit) are
// reported separately. delta_time_ratio compares whole operations (connect + prepare + send +
// verify/commit) of a delta re-ship and a full ship. The machine's load average is recorded:
// both tools are CPU-bound on loopback, so other work on the host moves both numbers.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile, copyFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { execa } from 'execa';
import { ImageStore } from '../depot/images/catalog.ts';
import { Shipper, type ShipResult } from '../ship/shipper.ts';
import { localShipTarget } from '../depot/images/ship-target.ts';
import { startSshd } from '../lab/loopback/sshd.ts';

const MB = 1024 * 1024;
const sizeMb = Number(process.env.BENCH_SHIP_MB ?? 1024);
const trials = Number(process.env.BENCH_SHIP_TRIALS ?? 3);
const cipher = process.env.BENCH_SHIP_CIPHER ?? 'aes128-gcm@openssh.com';
const inFlight = Number(process.env.BENCH_SHIP_INFLIGHT ?? 64);
const connections = process.env.BENCH_SHIP_CONNECTIONS ? Number(process.env.BENCH_SHIP_CONNECTIONS) : undefined;
// ssh2 falls back to per-packet JavaScript/node:crypto ciphers when its native binding does not
// load (scripts/ssh2-native.sh builds it for the Node that runs Navigator).
const ssh2Native = Boolean((createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean }).bindingAvailable);
const changedPct = 1;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const chunk = 16 * MB;
    for (let off = 0; off < bytes; off += chunk) await fh.write(randomBytes(Math.min(chunk, bytes - off)), 0, Math.min(chunk, bytes - off), off);
  } finally {
    await fh.close();
  }
}

async function main(): Promise<void> {
  const load0 = loadavg()[0]!;
  const root = await mkdtemp(join(process.env.BENCH_SHIP_DIR ?? tmpdir(), 'nav-bench-ship-'));
  // By default everything lives on a tmpfs, so both tools are measured on the network and
  // crypto path rather than on a shared, noisy disk (BENCH_SHIP_TMPFS=0 to use the disk).
  let mounted = false;
  if (process.env.BENCH_SHIP_TMPFS !== '0') {
    const r = await execa('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil((sizeMb * 6) / 1024) + 1}g`, 'tmpfs', root], { reject: false });
    mounted = r.exitCode === 0;
    if (!mounted) console.error(`bench:ship: tmpfs mount failed (${String(r.stderr).trim()}), using ${root} on disk`);
  }
  const sshd = await startSshd({ extraConfig: [`Ciphers ${cipher}`] });
  try {
    const bytes = sizeMb * MB;
    const src = join(root, 'src');
    await mkdir(src);
    await writeRandomFile(join(src, 'disk.img'), bytes);
    await writeFile(join(src, 'machine.vmx'), 'displayName = "bench"\n');

    const sender = new ImageStore({ dir: join(root, 'sender'), keepVersions: 3 });
    await sender.start();
    let t = Date.now();
    const v1 = await sender.import(src, 'bench', { version: '1' });
    const importMs = Date.now() - t;
    const srcDisk = join(src, 'disk.img');

    const shipper = new Shipper({
      store: sender,
      ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: sshd.knownHostsFile, ciphers: [cipher] },
      requestsInFlight: inFlight,
      ...(connections ? { connections } : {}),
    });
    const transferMs = (r: ShipResult) => r.connectMs + r.sendMs;
    let lanes = 0;

    // Full ships and scp, alternating, each into a fresh target folder.
    const navMbS: number[] = [];
    const scpMbS: number[] = [];
    const commitMs: number[] = [];
    const fullTotalMs: number[] = [];
    const imageBytes = bytes + 22;
    for (let i = 0; i < trials; i++) {
      const target = new ImageStore({ dir: join(root, `target-${i}`), keepVersions: 3 });
      await target.start();
      const r = await shipper.ship(v1, localShipTarget(target, sshd.host, sshd.port));
      navMbS.push(imageBytes / MB / (transferMs(r) / 1000));
      lanes = r.connections;
      commitMs.push(r.commitMs);
      fullTotalMs.push(r.durationMs);
      await rm(join(root, `target-${i}`), { recursive: true, force: true });

      const scpDir = join(root, `scp-${i}`);
      await mkdir(scpDir);
      t = Date.now();
      await execa('scp', [...sshd.clientOptions(), '-o', `Ciphers=${cipher}`, '-P', String(sshd.port), '-r', join(sender.imageFilesDir(v1)), `${sshd.user}@${sshd.host}:${scpDir}/`]);
      scpMbS.push(imageBytes / MB / ((Date.now() - t) / 1000));
      await rm(scpDir, { recursive: true, force: true });
    }

    // Delta: the target holds v1; v2 differs in changedPct % of its blocks.
    const target = new ImageStore({ dir: join(root, 'target-delta'), keepVersions: 3 });
    await target.start();
    const full = await shipper.ship(v1, localShipTarget(target, sshd.host, sshd.port));
    const m1 = await sender.getManifest(v1);
    const blocks = Math.ceil(bytes / m1.blockSize);
    const nChanged = Math.max(1, Math.round((blocks * changedPct) / 100));
    const src2 = join(root, 'src2');
    await mkdir(src2);
    await copyFile(srcDisk, join(src2, 'disk.img'));
    await copyFile(join(src, 'machine.vmx'), join(src2, 'machine.vmx'));
    const fh = await open(join(src2, 'disk.img'), 'r+');
    for (let k = 0; k < nChanged; k++) {
      const block = Math.floor(((k + 0.5) * blocks) / nChanged);
      await fh.write(randomBytes(4096), 0, 4096, block * m1.blockSize + 1000);
    }
    await fh.close();
    const v2 = await sender.import(src2, 'bench', { version: '2' });
    await rm(src, { recursive: true, force: true });
    await rm(src2, { recursive: true, force: true });
    const delta = await shipper.ship(v2, localShipTarget(target, sshd.host, sshd.port));
    const deltaVerify = await target.verify(v2);
    if (!deltaVerify.ok) throw new Error('delta-shipped image failed full verification');

    await rm(target.dir, { recursive: true, force: true });
    // Resume: cut the connection half way, then ship again.
    const rtarget = new ImageStore({ dir: join(root, 'target-resume'), keepVersions: 3 });
    await rtarget.start();
    const ac = new AbortController();
    let firstSent = 0;
    await shipper
      .ship(v1, localShipTarget(rtarget, sshd.host, sshd.port), {
        signal: ac.signal,
        onProgress: (p) => {
          firstSent = p.bytesSent;
          if (p.bytesSent >= imageBytes / 2) ac.abort();
        },
      })
      .then(
        () => {
          throw new Error('transfer was not cut off');
        },
        () => undefined,
      );
    const resumed = await shipper.ship(v1, localShipTarget(rtarget, sshd.host, sshd.port));
    const resentPct = Math.max(0, ((firstSent + resumed.bytesSent - imageBytes) / imageBytes) * 100);

    const load1 = loadavg()[0]!;
    const nav = median(navMbS);
    const scp = median(scpMbS);
    const rows: [string, string][] = [
      ['image', `${sizeMb} MiB, ${m1.blockSize / MB} MiB blocks, ${mounted ? 'tmpfs' : 'disk'}`],
      ['navigator', `${lanes} SSH connection(s), ${inFlight} requests in flight, cipher ${cipher}, ssh2 native crypto ${ssh2Native ? 'yes' : 'NO (JS fallback)'}`],
      ['load average (1 min) start / end', `${round(load0, 2)} / ${round(load1, 2)}`],
      ['import (copy + hash)', `${importMs} ms`],
      ['navigator full ship, MB/s (median)', `${round(nav)}  [${navMbS.map((x) => round(x)).join(', ')}]`],
      ['scp, MB/s (median)', `${round(scp)}  [${scpMbS.map((x) => round(x)).join(', ')}]`],
      ['ratio navigator / scp', `${round(nav / scp, 3)}`],
      ['target verify + commit (full)', `${round(median(commitMs), 0)} ms`],
      ['full ship total (connect+prepare+send+commit)', `${full.durationMs} ms`],
      ['delta: changed blocks', `${nChanged} of ${blocks} (${round((nChanged / blocks) * 100, 2)} %)`],
      ['delta: bytes sent', `${delta.bytesSent}`],
      ['delta total (connect+prepare+send+commit)', `${delta.durationMs} ms (connect ${delta.connectMs}, prepare ${delta.prepareMs}, send ${delta.sendMs}, commit ${delta.commitMs})`],
      ['delta / full time', `${round(delta.durationMs / full.durationMs, 3)}`],
      ['resume: sent before cut / after', `${firstSent} / ${resumed.bytesSent} (${resumed.kind})`],
      ['resume: bytes sent twice', `${round(resentPct, 2)} %`],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    console.log(
      JSON.stringify({
        bench: 'ship',
        storage: mounted ? 'tmpfs' : 'disk',
        bytes: imageBytes,
        block_bytes: m1.blockSize,
        cipher,
        requests_in_flight: inFlight,
        connections: lanes,
        ssh2_native_crypto: ssh2Native,
        load_avg_1m: [round(load0, 2), round(load1, 2)],
        trials,
        navigator_mb_s: round(nav, 1),
        scp_mb_s: round(scp, 1),
        ratio_vs_scp: round(nav / scp, 3),
        navigator_trials_mb_s: navMbS.map((x) => round(x)),
        scp_trials_mb_s: scpMbS.map((x) => round(x)),
        commit_verify_ms: round(median(commitMs), 0),
        full_total_ms: full.durationMs,
        delta_changed_pct: round((nChanged / blocks) * 100, 2),
        delta_bytes_sent: delta.bytesSent,
        delta_total_ms: delta.durationMs,
        delta_time_ratio: round(delta.durationMs / full.durationMs, 3),
        resume_bytes_resent_pct: round(resentPct, 2),
        import_ms: importMs,
      }),
    );
  } finally {
    await sshd.stop();
    if (mounted) await execa('umount', [root], { reject: false });
    await rm(root, { recursive: true, force: true });
  }
}

await main();
