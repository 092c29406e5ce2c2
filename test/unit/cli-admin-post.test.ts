import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../cli/main.ts';

// The admin commands (switchover, drain, bootstrap, image refresh) say what is wrong: a missing
// admin token is that (not "cannot reach the depot"), and an error page that is not JSON is shown
// with its HTTP status instead of a JSON parse error.

async function run(args: string[]): Promise<unknown> {
  return buildProgram().exitOverride().parseAsync(['node', 'navigator', ...args]).then(
    () => undefined,
    (err: unknown) => err,
  );
}

describe('admin commands: errors', () => {
  it('no admin token anywhere: says so, before any request', async () => {
    const saved = process.env.NAVIGATOR_ADMIN_TOKEN;
    delete process.env.NAVIGATOR_ADMIN_TOKEN;
    // A depot configuration without http.adminToken.
    const dir = mkdtempSync(join(tmpdir(), 'nav-cli-admin-'));
    const config = join(dir, 'navigator.yaml');
    writeFileSync(config, 'http:\n  port: 7480\n');
    let requests = 0;
    const server = createServer((_req, res) => (requests++, res.end('{}')));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const err = await run(['switchover', '--service', 'svc', '--api', api, '--config', config]);
      expect(String(err)).toMatch(/no admin token: set http\.adminToken/);
      expect(String(err)).not.toMatch(/cannot reach/);
      expect(requests).toBe(0);
    } finally {
      if (saved !== undefined) process.env.NAVIGATOR_ADMIN_TOKEN = saved;
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an error page that is not JSON: its HTTP status and text', async () => {
    const server = createServer((_req, res) => {
      res.statusCode = 502;
      res.end('<html>Bad Gateway</html>');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const err = await run(['switchover', '--service', 'svc', '--api', api, '--token', 't']);
      expect(String(err)).toMatch(/\/api\/switchover: HTTP 502: <html>Bad Gateway<\/html>/);
    } finally {
      server.close();
    }
  });
});
