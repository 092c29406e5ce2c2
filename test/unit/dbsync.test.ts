import { describe, expect, it } from 'vitest';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FakeClock } from '../../shared/clock.ts';
import { DumpGuard, requalify } from '../../pilot/db/dump-guard.ts';
import { SyncLoop, retryDelayMs } from '../../pilot/db/sync-loop.ts';
import { optionFileText, optionFileValue } from '../../pilot/db/mysql-credentials.ts';
import { schemaNames, syncHeartbeatFields } from '../../pilot/db/sync-history.ts';
import { errorLines } from '../../pilot/db/dbsync.ts';

// The pure parts of the database sync: the dump guard (byte count, trailer, staging rewrite),
// the retry schedule, option-file quoting and schema naming.

async function guardRun(text: string, chunkSizes: number[]): Promise<{ out: string; guard: DumpGuard }> {
  const buf = Buffer.from(text, 'utf8');
  const chunks: Buffer[] = [];
  let pos = 0;
  let i = 0;
  while (pos < buf.length) {
    const n = chunkSizes[i++ % chunkSizes.length]!;
    chunks.push(buf.subarray(pos, pos + n));
    pos += n;
  }
  const guard = new DumpGuard('app', 'app__nav_staging');
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(chunks),
    guard,
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(out).toString('utf8'), guard };
}

const DUMP = [
  '-- MariaDB dump 10.19',
  '-- Host: localhost    Database: app',
  '/*!40101 SET NAMES utf8mb4 */;',
  'CREATE TABLE `t` (`id` int, `s` varchar(50));',
  'INSERT INTO `t` VALUES',
  "(1,'`app`.t is data, not a reference — ünïcode'),",
  "(2,'ALTER DATABASE `app` in data');",
  'INSERT INTO `t` VALUES (3,\'`app`.x\'),(4,\'y\');',
  'ALTER DATABASE `app` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;',
  '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER trg AFTER INSERT ON `app`.`t` FOR EACH ROW INSERT INTO `app`.`log` VALUES (1) */;;',
  'CREATE PROCEDURE `p`() SELECT * FROM `app`.`t`, `other`.`u`, `app2`.`v`',
  "CREATE TRIGGER t2 BEFORE UPDATE ON app.t FOR EACH ROW SET NEW.s = CONCAT('see app.t, myapp.t', NEW.s)",
  'ALTER DATABASE `app` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;',
  '-- Dump completed on 2026-11-21 21:27:44',
  '',
].join('\n');

const EXPECTED = DUMP.replace(
  'ALTER DATABASE `app` CHARACTER SET latin1',
  'ALTER DATABASE `app__nav_staging` CHARACTER SET latin1',
)
  .replace('ALTER DATABASE `app` CHARACTER SET utf8mb4', 'ALTER DATABASE `app__nav_staging` CHARACTER SET utf8mb4')
  .replace('ON `app`.`t` FOR EACH ROW INSERT INTO `app`.`log`', 'ON `app__nav_staging`.`t` FOR EACH ROW INSERT INTO `app__nav_staging`.`log`')
  .replace('FROM `app`.`t`, `other`.`u`', 'FROM `app__nav_staging`.`t`, `other`.`u`')
  .replace("ON app.t FOR EACH ROW SET NEW.s = CONCAT('see app.t, myapp.t'", "ON app__nav_staging.t FOR EACH ROW SET NEW.s = CONCAT('see app__nav_staging.t, myapp.t'");

describe('DumpGuard', () => {
  it('points definitions at the staging schema, leaves data alone, counts bytes, sees the trailer — for any chunking', async () => {
    for (const sizes of [[1], [2, 3], [7], [64], [5, 1, 13], [100_000]]) {
      const { out, guard } = await guardRun(DUMP, sizes);
      expect(out).toBe(EXPECTED);
      expect(guard.stats.bytes).toBe(Buffer.byteLength(DUMP));
      expect(guard.stats.rewrittenLines).toBe(5);
      expect(guard.complete).toBe(true);
    }
  });

  it('a dump cut short has no trailer', async () => {
    const cut = DUMP.slice(0, DUMP.indexOf('-- Dump completed'));
    for (const sizes of [[1], [9], [100_000]]) expect((await guardRun(cut, sizes)).guard.complete).toBe(false);
    expect((await guardRun(`${DUMP}INSERT INTO \`t\` VALUES (5,'x');\n`, [50])).guard.complete).toBe(false);
  });

  it('refuses a dump that switches database', async () => {
    await expect(guardRun('-- x\nUSE `mysql`;\nDROP TABLE user;\n', [4])).rejects.toThrow(/USE statement/);
  });

  it('passes big data lines through in one piece, without copying them line by line', async () => {
    const row = `(1,'${'x'.repeat(300_000)}')`;
    const text = `INSERT INTO \`t\` VALUES\n${row},\n${row};\n-- Dump completed\n`;
    const { out, guard } = await guardRun(text, [65_536]);
    expect(out).toBe(text);
    expect(guard.complete).toBe(true);
  });

  it('requalify moves references to that schema only, and round-trips', () => {
    expect(requalify('SELECT * FROM `app__nav_staging`.`t` JOIN `app__nav_staging2`.`u`', 'app__nav_staging', 'app')).toBe(
      'SELECT * FROM `app`.`t` JOIN `app__nav_staging2`.`u`',
    );
    const text = "INSERT INTO app.log SELECT x.app, 'app.example.org' FROM `app`.t x, myapp.t, `my app`.t, app2.t, t.app.c";
    const staged = requalify(text, 'app', 'app__nav_staging');
    expect(staged).toBe(
      "INSERT INTO app__nav_staging.log SELECT x.app, 'app__nav_staging.example.org' FROM `app__nav_staging`.t x, myapp.t, `my app`.t, app2.t, t.app.c",
    );
    expect(requalify(staged, 'app__nav_staging', 'app')).toBe(text);
  });
});

describe('retry schedule', () => {
  it('doubles from the base up to the cap', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((n) => retryDelayMs(n, 5000, 60_000))).toEqual([0, 5000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000]);
  });

  it('SyncLoop: runs at once, every interval after success, backs off after failures, never overlaps', async () => {
    const clock = new FakeClock(0);
    const starts: number[] = [];
    let fail = 3;
    let running = 0;
    let maxRunning = 0;
    const loop = new SyncLoop<number>({
      clock,
      intervalMs: 10_000,
      retryBaseMs: 1000,
      retryMaxMs: 3000,
      run: async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        starts.push(clock.now());
        await Promise.resolve();
        running--;
        if (fail > 0) {
          fail--;
          throw new Error('down');
        }
        return clock.now();
      },
    });
    const settle = async () => {
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    loop.start();
    clock.advance(0);
    await settle();
    for (let t = 0; t < 40_000; t += 100) {
      clock.advance(100);
      await settle();
    }
    // t=0 fails; retries after 1000, 2000, 3000 (cap), then success; then every 10 s.
    expect(starts.slice(0, 6)).toEqual([0, 1000, 3000, 6000, 16_000, 26_000]);
    expect(maxRunning).toBe(1);
    expect(loop.state.consecutiveFailures).toBe(0);
    await loop.stop();
    const n = starts.length;
    clock.advance(100_000);
    await settle();
    expect(starts.length).toBe(n);
  });

  it('SyncLoop: the cap holds, and runNow waits for the run in progress and reschedules', async () => {
    const clock = new FakeClock(0);
    const starts: number[] = [];
    let release: (() => void) | undefined;
    let mode: 'fail' | 'hold' | 'ok' = 'fail';
    const loop = new SyncLoop<string, string>({
      clock,
      intervalMs: 50_000,
      retryBaseMs: 1000,
      retryMaxMs: 3000,
      run: async (_signal, arg) => {
        starts.push(clock.now());
        if (mode === 'fail') throw new Error('down');
        if (mode === 'hold') await new Promise<void>((r) => (release = r));
        return arg ?? 'scheduled';
      },
    });
    const settle = async () => {
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    loop.start();
    clock.advance(0);
    await settle();
    for (let i = 0; i < 200; i++) {
      clock.advance(100);
      await settle();
    }
    const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
    expect(gaps.slice(0, 5)).toEqual([1000, 2000, 3000, 3000, 3000]);
    mode = 'hold';
    clock.advance(3000);
    await settle();
    expect(loop.state.inFlight).toBe(true);
    mode = 'ok';
    const now = loop.runNow('asked');
    await settle();
    const before = starts.length;
    release!();
    await expect(now).resolves.toBe('asked');
    expect(starts.length).toBe(before + 1);
    expect(loop.state.nextAt).toBe(clock.now() + 50_000);
    await loop.stop();
  });
});

describe('option files and names', () => {
  it('quotes values so any password survives, refuses line breaks', () => {
    expect(optionFileValue('password', 'a"b\\c #d;e\'f')).toBe('"a\\"b\\\\c #d;e\'f"');
    expect(() => optionFileValue('password', 'a\nb')).toThrow(/line break/);
    const text = optionFileText({ host: 'db1', port: 3307, user: 'nav', password: 'p"w' });
    expect(text).toBe('[client]\nuser="nav"\npassword="p\\"w"\nhost="db1"\nport=3307\nprotocol=TCP\n');
    expect(optionFileText({ host: 'x', port: 1, user: 'u', password: '', socket: '/run/m.sock' })).toContain('socket="/run/m.sock"\nprotocol=SOCKET');
  });

  it('schema names: suffixes fit the 64-character limit, odd names are refused', () => {
    expect(schemaNames('a'.repeat(50)).previous).toHaveLength(64);
    expect(schemaNames('zabbix')).toEqual({ live: 'zabbix', staging: 'zabbix__nav_staging', previous: 'zabbix__nav_previous', meta: 'zabbix__nav_sync' });
    expect(() => schemaNames('a'.repeat(51))).toThrow(/too long/);
    expect(() => schemaNames('bad`name')).toThrow(/not supported/);
    expect(() => schemaNames('x__nav_staging')).toThrow(/suffix/);
  });

  it('heartbeat fields from the history', () => {
    const good = { snapshotAt: 1000 } as never;
    expect(syncHeartbeatFields({ lastGood: undefined, lastAttempt: undefined }, 5000, 60_000)).toEqual({ syncFailing: false });
    expect(syncHeartbeatFields({ lastGood: good, lastAttempt: { at: 1000, ok: true } }, 5000, 60_000)).toEqual({ lastSyncAt: 1000, syncFailing: false });
    expect(syncHeartbeatFields({ lastGood: good, lastAttempt: { at: 4000, ok: false } }, 5000, 60_000)).toEqual({ lastSyncAt: 1000, syncFailing: true });
    expect(syncHeartbeatFields({ lastGood: good, lastAttempt: { at: 1000, ok: true } }, 1000 + 151_000, 60_000)).toEqual({ lastSyncAt: 1000, syncFailing: true });
  });

  it('errorLines keeps the errors, not the echoed statement', () => {
    const stderr = `--------------\nINSERT INTO \`t\` VALUES (1,'secret data')\n--------------\n\nERROR 2013 (HY000) at line 12: Lost connection to server during query\n`;
    expect(errorLines(stderr)).toBe('ERROR 2013 (HY000) at line 12: Lost connection to server during query');
    expect(errorLines('mariadb-dump: Got error: 1045: "Access denied"\n')).toBe('mariadb-dump: Got error: 1045: "Access denied"');
  });
});
