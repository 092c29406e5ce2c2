import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';

// Debian chromium inside a network namespace. Playwright drives chromium over a pipe
// (--remote-debugging-pipe, fds 3 and 4), and `ip netns exec` keeps open fds across setns and
// exec, so a launcher script that re-executes chromium inside the namespace is all it takes for
// the browser to see the lab LAN while the test process stays in the root namespace.

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export interface NetnsBrowser {
  browser: Browser;
  /** Closes the browser and removes the launcher script; safe to call twice. */
  close(): Promise<void>;
}

/** Launches headless chromium whose network is the namespace `ns` (needs root). */
export async function launchChromiumInNetns(ns: string): Promise<NetnsBrowser> {
  // The name goes into a shell script: allow only what ip-netns names in the lab are made of.
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(ns)) throw new Error(`launchChromiumInNetns: bad namespace name ${JSON.stringify(ns)}`);
  const dir = await mkdtemp(join(tmpdir(), 'nav-chromium-netns-'));
  const launcher = join(dir, 'chromium-in-netns');
  await writeFile(launcher, `#!/bin/sh\nexec ip netns exec '${ns}' ${CHROMIUM} "$@"\n`);
  await chmod(launcher, 0o755);
  let browser: Browser;
  try {
    browser = await chromium.launch({ executablePath: launcher, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  let closed = false;
  return {
    browser,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await browser.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
