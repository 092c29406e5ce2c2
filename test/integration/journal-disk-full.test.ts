import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { execa } from 'execa';
import { Journal, parseJournalText } from '../../depot/journal/journal.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';

// The journal on a full disk (a 64 KiB tmpfs): an append that does not fit fails with a clear
// DISK_FULL error and is cut back to the last whole record, so the file stays valid, later
// appends that fit still work, and the next start opens it (no crash loop on JOURNAL_CORRUPT).

let root: string;
let mnt: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-journal-full-'));
  mnt = join(root, 'tmpfs');
  await mkdir(mnt);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
});

afterAll(async () => {
  if (mnt) await execa('umount', [mnt], { reject: false });
  if (root) await rm(root, { recursive: true, force: true });
});

let n = 0;
function rec(): MovementRecord {
  n++;
  return {
    id: randomUUID(),
    time: 1_700_000_000_000 + n * 1000,
    service: 'zabbix',
    role: 'primary',
    host: 'ws-01',
    address: '10.0.0.50',
    fromHost: '',
    event: 'placed',
    failover: false,
    reason: `record ${n} ${'x'.repeat(200)}`,
    term: 1,
    timings: {},
  };
}

describe('journal on a full disk', () => {
  it('a failed append is rolled back with a clear error; the journal stays valid and opens again', async () => {
    const path = join(mnt, 'journal.jsonl');
    const journal = new Journal({ path, logger: silentLogger() });
    await journal.open();
    let acknowledged = 0;
    let failure: unknown;
    for (let i = 0; i < 100 && !failure; i++) {
      try {
        acknowledged += await journal.appendMany(Array.from({ length: 20 }, rec));
      } catch (err) {
        failure = err;
      }
    }
    expect(failure).toBeInstanceOf(NavigatorError);
    expect((failure as NavigatorError).code).toBe('DISK_FULL');
    expect((failure as NavigatorError).message).toMatch(/could not append 20 record\(s\).*the disk is full/);
    expect(acknowledged).toBeGreaterThan(0);
    // The file holds exactly the acknowledged records, every line whole.
    const text = await readFile(path, 'utf8');
    const parsed = parseJournalText(text, path);
    expect(parsed.tornLine).toBeUndefined();
    expect(parsed.records).toHaveLength(acknowledged);
    // A small record still fits after the rollback, and is kept.
    expect(await journal.append(rec())).toBe(true);
    await journal.close();
    // The next start opens the journal with every acknowledged record.
    const again = new Journal({ path, logger: silentLogger() });
    await again.open();
    expect(again.size).toBe(acknowledged + 1);
    await again.close();
  });
});
