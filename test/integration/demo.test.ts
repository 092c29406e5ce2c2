import { describe, it, expect, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { markedPids, killMarked } from '../../demo/marked-processes.ts';
import { registryDir, sweepStaleDemos } from '../../demo/registry.ts';

// `navigator demo --no-chaos` as a user runs it (`npm start`): it comes up, its tracking page
// answers at the printed address with 4 depots alive and one primary, and Ctrl-C (SIGINT)
// leaves nothing behind: no namespace, no link or address in the root namespace, no process,
// no temp folder, no registry record. Needs root (network namespaces), as CI runs it.

const REPO = resolve(import.meta.dirname, '../..');
const NODE22 = join(REPO, 'node_modules/.bin/node');

let child: ResultPromise | undefined;
let demoId: string | undefined;
const lines: string[] = [];

afterAll(async () => {
  // Only if the test failed half-way: the demo's own registry lets a sweep remove everything.
  if (child && child.exitCode === null) {
    child.kill('SIGKILL');
    await child.catch(() => undefined);
  }
  if (demoId) await killMarked(demoId).catch(() => undefined);
  await sweepStaleDemos().catch(() => undefined);
});

function waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolveLine, reject) => {
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms; output:\n${lines.join('\n')}`)), timeoutMs);
    const check = () => {
      for (const l of lines) {
        const m = re.exec(l);
        if (m) {
          clearTimeout(timer);
          resolveLine(m);
          return true;
        }
      }
      return false;
    };
    if (check()) return;
    const iv = setInterval(() => {
      if (check()) clearInterval(iv);
    }, 100);
    void child!.finally(() => {
      clearInterval(iv);
      if (!check()) {
        clearTimeout(timer);
        reject(new Error(`demo exited before printing ${re}; output:\n${lines.join('\n')}`));
      }
    });
  });
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

describe('navigator demo', () => {
  it('comes up with 4 depots and one primary, serves the page, and Ctrl-C leaves nothing behind', async () => {
    expect(process.getuid?.(), 'the demo test needs root (network namespaces)').toBe(0);
    child = execa(NODE22, ['bin/navigator.mjs', 'demo', '--no-chaos'], {
      cwd: REPO,
      env: { PATH: `${join(REPO, 'node_modules/.bin')}:${process.env.PATH ?? '/usr/bin:/bin'}` },
      reject: false,
      buffer: false,
      stdin: 'ignore',
    });
    for (const s of [child.stdout, child.stderr]) createInterface({ input: s! }).on('line', (l) => lines.push(l));

    demoId = (await waitForLine(/namespaces navdemo-([0-9a-f]{6})-\*/, 20_000))[1]!;
    const url = (await waitForLine(/Tracking page: (http:\/\/\S+)/, 80_000))[1]!;
    const tmpDirs = (await execa('bash', ['-c', 'ls -d /tmp/navdemo-* 2>/dev/null || true'])).stdout.split('\n').filter((d) => d.includes(`navdemo-${demoId}-`));
    expect(tmpDirs).toHaveLength(1);

    const page = await fetch(url, { signal: AbortSignal.timeout(5000) });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html|<!doctype html/i);

    const depots = await getJson<{ depots: Array<{ name: string; state: string }> }>(new URL('/api/depots', url).href);
    expect(depots.depots.filter((d) => d.state === 'alive').map((d) => d.name).sort()).toEqual(['ws1', 'ws2', 'ws3', 'ws4']);
    const services = await getJson<{ services: Array<{ service: string; copies: Array<{ host: string; role: string; state: string }> }> }>(new URL('/api/services', url).href);
    const monitor = services.services.find((s) => s.service === 'monitor');
    const running = (monitor?.copies ?? []).filter((c) => c.state === 'running');
    expect(running.filter((c) => c.role === 'primary')).toHaveLength(1);
    expect(running.filter((c) => c.role === 'standby').length).toBeGreaterThanOrEqual(1);

    // The sample service itself answers at the service address (its monitor runs on the primary).
    const status = await getJson<{ host: string; written: number }>(new URL('/json', url.replace(':7480', ':8080')).href);
    expect(status.host).toBe(running.find((c) => c.role === 'primary')!.host);

    // Everything the demo made, before Ctrl-C: namespaces, the root-namespace link, processes.
    const nsBefore = (await execa('ip', ['netns', 'list'])).stdout;
    expect(nsBefore).toContain(`navdemo-${demoId}-ws1`);
    expect((await execa('ip', ['link', 'show', `nvd${demoId}`], { reject: false })).exitCode).toBe(0);
    expect((await markedPids(demoId)).length).toBeGreaterThan(4);

    child.kill('SIGINT');
    const r = await Promise.race([child, new Promise<undefined>((res) => setTimeout(() => res(undefined), 30_000))]);
    expect(r, `demo did not exit within 30 s of SIGINT; output:\n${lines.join('\n')}`).toBeDefined();
    expect(r!.exitCode, lines.join('\n')).toBe(0);
    expect(lines.join('\n')).toMatch(/everything it made is removed/);

    const nsAfter = (await execa('ip', ['netns', 'list'])).stdout;
    expect(nsAfter).not.toContain(`navdemo-${demoId}`);
    expect((await execa('ip', ['link', 'show', `nvd${demoId}`], { reject: false })).exitCode).not.toBe(0);
    const addrs = (await execa('ip', ['-o', 'addr', 'show'])).stdout;
    const net = /LAN: .* this machine joins it as (\d+\.\d+\.\d+)\.254/.exec(lines.join('\n'))![1]!;
    expect(addrs).not.toContain(`${net}.`);
    expect(await markedPids(demoId)).toEqual([]);
    expect((await execa('pgrep', ['-f', `navdemo-${demoId}`], { reject: false })).stdout).toBe('');
    expect(existsSync(tmpDirs[0]!)).toBe(false);
    expect(existsSync(join(registryDir(), `${demoId}.json`))).toBe(false);
  }, 110_000);

  it('a demo killed with SIGKILL is cleaned up by `navigator demo --cleanup`', async () => {
    lines.length = 0;
    child = execa(NODE22, ['bin/navigator.mjs', 'demo', '--no-chaos'], {
      cwd: REPO,
      env: { PATH: `${join(REPO, 'node_modules/.bin')}:${process.env.PATH ?? '/usr/bin:/bin'}` },
      reject: false,
      buffer: false,
      stdin: 'ignore',
    });
    for (const s of [child.stdout, child.stderr]) createInterface({ input: s! }).on('line', (l) => lines.push(l));
    demoId = (await waitForLine(/namespaces navdemo-([0-9a-f]{6})-\*/, 20_000))[1]!;
    // Depots are up (their own process groups, so they outlive the demo) when they are all alive.
    await waitForLine(/all 4 depots alive/, 60_000);
    child.kill('SIGKILL');
    await child;
    expect((await execa('ip', ['netns', 'list'])).stdout).toContain(`navdemo-${demoId}-`);
    expect((await markedPids(demoId)).length).toBeGreaterThan(0);

    const r = await execa(NODE22, ['bin/navigator.mjs', 'demo', '--cleanup'], { cwd: REPO, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(demoId);
    expect((await execa('ip', ['netns', 'list'])).stdout).not.toContain(`navdemo-${demoId}`);
    expect((await execa('ip', ['link', 'show', `nvd${demoId}`], { reject: false })).exitCode).not.toBe(0);
    expect(await markedPids(demoId)).toEqual([]);
    expect(existsSync(join(registryDir(), `${demoId}.json`))).toBe(false);
    const tmp = (await execa('bash', ['-c', 'ls -d /tmp/navdemo-* 2>/dev/null || true'])).stdout;
    expect(tmp).not.toContain(`navdemo-${demoId}-`);
  }, 90_000);
});
