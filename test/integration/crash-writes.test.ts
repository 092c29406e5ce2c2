import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { REPO_ROOT } from '../../shared/repo-root.ts';

// kill -9 while small files are being replaced: a child process rewrites a metadata file and an
// assignment in a loop with writeFileDurable; it is killed at a random moment, several times.
// Every time, each file is whole (valid JSON of one of the versions written), never empty or
// torn, and no temporary file is mistaken for it.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nav-crash-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const WRITER = `
import { writeFileDurable } from ${JSON.stringify(join(REPO_ROOT, 'shared/durable-file.ts'))};
const dir = process.argv[1];
const pad = 'x'.repeat(20000);
for (let n = 0; ; n++) {
  await writeFileDurable(dir + '/.navigator-container.json', JSON.stringify({ n, pad }));
  await writeFileDurable(dir + '/assignment.json', JSON.stringify({ n, pad }));
  if (n === 0) process.stdout.write('writing\\n');
}
`;

describe('kill -9 during metadata writes', () => {
  it('leaves every file whole, whatever the moment', async () => {
    for (let round = 0; round < 5; round++) {
      const child = execa(process.execPath, ['--input-type=module', '-e', WRITER, dir], { reject: false });
      await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 80)));
      child.kill('SIGKILL');
      await child;
      for (const f of ['.navigator-container.json', 'assignment.json']) {
        const v = JSON.parse(await readFile(join(dir, f), 'utf8')) as { n: number; pad: string };
        expect(Number.isInteger(v.n)).toBe(true);
        expect(v.pad).toHaveLength(20000);
      }
    }
    // Temporary files of an interrupted write may stay; they never carry a target's name.
    for (const f of await readdir(dir)) expect(f === '.navigator-container.json' || f === 'assignment.json' || /\.tmp$/.test(f)).toBe(true);
  });
});
