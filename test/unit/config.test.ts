import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig, envOverrides, describeConfig } from '../../shared/config.ts';
import { isNavigatorError } from '../../shared/errors.ts';

function tmpFile(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nav-cfg-'));
  const file = join(dir, 'navigator.yaml');
  writeFileSync(file, content);
  return file;
}

function errorOf(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected an error');
}

describe('config', () => {
  it('fills every default from an empty file and derives paths from dataDir', () => {
    const cfg = loadConfig({ path: tmpFile('node:\n  dataDir: /srv/nav\n'), env: {} });
    expect(cfg.membership.heartbeatMs).toBe(1000);
    expect(cfg.membership.suspectAfterMissed).toBe(3);
    expect(cfg.http.port).toBe(7480);
    expect(cfg.pilot.leaseMs).toBe(1500);
    expect(cfg.dbsync.syncIntervalMs).toBe(60000);
    expect(cfg.store.dir).toBe('/srv/nav/images');
    expect(cfg.network.identityFile).toBe('/srv/nav/identity.key');
  });

  it('refuses a wrong type with the field path and the reason', () => {
    const err = errorOf(() => loadConfig({ path: tmpFile('http:\n  port: "eighty"\n'), env: {} }));
    expect(isNavigatorError(err, 'CONFIG_INVALID')).toBe(true);
    expect(err.message).toMatch(/http\.port: .*expected number/);
    expect(err.message).toContain('navigator.yaml');
  });

  it('refuses unknown fields (typos) by name', () => {
    const err = errorOf(() => parseConfig({ membership: { hearbeatMs: 500 } }, 'x.yaml'));
    expect(err.message).toMatch(/membership: Unrecognized key: "hearbeatMs"/);
  });

  it('refuses out-of-range values', () => {
    const err = errorOf(() => parseConfig({ http: { port: 70000 }, membership: { heartbeatMs: 0 } }));
    expect(err.message).toContain('http.port');
    expect(err.message).toContain('membership.heartbeatMs');
  });

  it('refuses invalid YAML with the line number', () => {
    const err = errorOf(() => loadConfig({ path: tmpFile('http:\n  port: [1,\n'), env: {} }));
    expect(err.message).toMatch(/not valid YAML \(line \d+/);
  });

  it('refuses a top level that is not a mapping', () => {
    const err = errorOf(() => loadConfig({ path: tmpFile('- a\n- b\n'), env: {} }));
    expect(err.message).toMatch(/top level must be a mapping/);
  });

  it('reports a missing explicit file as not found', () => {
    const err = errorOf(() => loadConfig({ path: '/nonexistent/navigator.yaml', env: {} }));
    expect(err.code).toBe('CONFIG_NOT_FOUND');
    expect(err.message).toContain('/nonexistent/navigator.yaml');
  });

  it('applies environment overrides over the file, typed', () => {
    const env = { NAVIGATOR__http__port: '7481', NAVIGATOR__network__mdns: 'false', NAVIGATOR__network__bootstrap: '[/ip4/1.2.3.4/tcp/1]' };
    expect(envOverrides(env)).toEqual({ http: { port: 7481 }, network: { mdns: false, bootstrap: ['/ip4/1.2.3.4/tcp/1'] } });
    const cfg = loadConfig({ path: tmpFile('http:\n  port: 9000\n'), env });
    expect(cfg.http.port).toBe(7481);
    expect(cfg.network.mdns).toBe(false);
  });

  it('an invalid environment override names the field', () => {
    const err = errorOf(() => loadConfig({ path: tmpFile(''), env: { NAVIGATOR__membership__heartbeatMs: 'soon' } }));
    expect(err.message).toContain('membership.heartbeatMs');
  });

  it('describes every field with a default and a description', () => {
    const rows = describeConfig();
    expect(rows.length).toBeGreaterThan(30);
    for (const row of rows) expect(row.description, `${row.section}.${row.field}`).not.toBe('');
  });
});

describe('deploy/navigator.yaml', () => {
  it('is the generated default configuration and is valid', async () => {
    const { readFileSync } = await import('node:fs');
    const { renderDefaultConfig } = await import('../../shared/config-file.ts');
    const file = new URL('../../deploy/navigator.yaml', import.meta.url);
    expect(readFileSync(file, 'utf8'), 'regenerate deploy/navigator.yaml from shared/config-file.ts').toBe(renderDefaultConfig());
    const cfg = loadConfig({ path: file.pathname, env: {} });
    expect(cfg.http.port).toBe(7480);
  });
});
