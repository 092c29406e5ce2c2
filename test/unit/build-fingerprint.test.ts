import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprint } from '../../bin/build.mjs';

// The bundled build is reused only while its fingerprint matches the sources (bin/build.mjs):
// any change to a source file or the lockfile must give a new one, anything else must not.

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tree(): string {
  const root = mkdtempSync(join(tmpdir(), 'nav-fp-'));
  dirs.push(root);
  for (const d of ['cli', 'shared', 'web', 'depot', 'ship', 'pilot', 'plugins', 'lab', 'demo']) mkdirSync(join(root, d));
  writeFileSync(join(root, 'cli/main.ts'), 'export const a = 1;\n');
  writeFileSync(join(root, 'depot/daemon.ts'), 'export const b = 2;\n');
  writeFileSync(join(root, 'package.json'), '{"name":"navigator"}\n');
  writeFileSync(join(root, 'package-lock.json'), '{}\n');
  return root;
}

describe('build fingerprint', () => {
  it('is stable, and changes with any source or the lockfile', async () => {
    const root = tree();
    const fp = await fingerprint(root);
    expect(fp).toMatch(/^[0-9a-f]{16}$/);
    expect(await fingerprint(root)).toBe(fp);

    writeFileSync(join(root, 'README.md'), 'docs\n');
    writeFileSync(join(root, 'web/notes.txt'), 'not a source\n');
    expect(await fingerprint(root)).toBe(fp);

    writeFileSync(join(root, 'depot/daemon.ts'), 'export const b = 3;\n');
    const edited = await fingerprint(root);
    expect(edited).not.toBe(fp);

    mkdirSync(join(root, 'pilot/sub'));
    writeFileSync(join(root, 'pilot/sub/new.ts'), 'export {};\n');
    const added = await fingerprint(root);
    expect(added).not.toBe(edited);

    writeFileSync(join(root, 'package-lock.json'), '{"lockfileVersion":3}\n');
    expect(await fingerprint(root)).not.toBe(added);
  });
});
