import { describe, it, expect, vi, afterEach } from 'vitest';
import { stripVTControlCharacters } from 'node:util';
import { painter, visibleWidth } from '../../cli/colour.ts';
import {
  ProgressBoard,
  formatBar,
  formatBytes,
  formatElapsed,
  formatEta,
  formatPercent,
  formatProgressLine,
  formatProgressLog,
  formatRate,
  fractionOf,
  type ProgressItem,
} from '../../cli/progress.ts';
import { depotOf, imageNames, stagingNotShipped, transferItem, stagingOf, type TransferRow } from '../../cli/transfers-api.ts';
import { bootstrapBoard, drainBoard, primariesOn } from '../../cli/operation-progress.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('formatting', () => {
  it('sizes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024)).toBe('1.0 KiB');
    expect(formatBytes(12.34 * MiB)).toBe('12.3 MiB');
    expect(formatBytes(512 * MiB)).toBe('512 MiB');
    expect(formatBytes(1024 * MiB - 1)).toBe('1.0 GiB');
    expect(formatBytes(2.5 * GiB)).toBe('2.5 GiB');
    expect(formatBytes(3 * 1024 * GiB)).toBe('3.0 TiB');
    expect(formatBytes(Number.NaN)).toBe('?');
    expect(formatBytes(-1)).toBe('?');
  });

  it('rates, with a placeholder when unknown', () => {
    expect(formatRate(0)).toBe('0 B/s');
    expect(formatRate(48 * MiB)).toBe('48.0 MiB/s');
    expect(formatRate(112.4 * MiB)).toBe('112 MiB/s');
    expect(formatRate(undefined)).toBe('-- B/s');
    expect(formatRate(Number.POSITIVE_INFINITY)).toBe('-- B/s');
  });

  it('ETA in s, m+s, h+m, capped, and "--" when unknown', () => {
    expect(formatEta(0)).toBe('0s');
    expect(formatEta(1)).toBe('1s');
    expect(formatEta(42_000)).toBe('42s');
    expect(formatEta(59_500)).toBe('1m00s');
    expect(formatEta(185_000)).toBe('3m05s');
    expect(formatEta(3_720_000)).toBe('1h02m');
    expect(formatEta(100 * 3_600_000 + 1)).toBe('>99h');
    expect(formatEta(undefined)).toBe('--');
    expect(formatEta(null)).toBe('--');
    expect(formatEta(Number.NaN)).toBe('--');
    expect(formatEta(-5)).toBe('--');
    expect(formatElapsed(400)).toBe('0.4s');
    expect(formatElapsed(65_000)).toBe('1m05s');
  });

  it('fractions and percentages (unknown totals stay unknown, an empty total is complete)', () => {
    expect(fractionOf(1, 4)).toBe(0.25);
    expect(fractionOf(5, 4)).toBe(1);
    expect(fractionOf(0, 0)).toBe(1);
    expect(fractionOf(1, undefined)).toBeUndefined();
    expect(formatPercent(0.256)).toBe(' 25%');
    expect(formatPercent(1)).toBe('100%');
    expect(formatPercent(undefined)).toBe('  ?%');
  });

  it('bars have exactly the asked width for every fraction, unicode and ascii', () => {
    for (const width of [1, 7, 10, 20, 30]) {
      for (let i = 0; i <= 100; i++) {
        expect([...formatBar(i / 100, width)].length).toBe(width);
        expect(formatBar(i / 100, width, true)).toHaveLength(width);
      }
    }
    expect(formatBar(0, 10)).toBe('░'.repeat(10));
    expect(formatBar(1, 10)).toBe('█'.repeat(10));
    expect(formatBar(0.5, 10, true)).toBe('#####.....');
    expect(formatBar(0.55, 10)).toBe('█████▌░░░░');
    expect(formatBar(undefined, 4, true)).toBe('....');
    expect(formatBar(2, 4, true)).toBe('####');
  });
});

describe('progress lines', () => {
  const ship: ProgressItem = { label: 'ship zabbix → 10.0.0.3:7471', phase: 'sending (delta)', done: 512 * MiB, total: 2 * GiB, unit: 'bytes', rateBps: 50 * MiB, etaMs: 30_720 };

  it('a live line: bar, percentage, bytes, rate, ETA', () => {
    expect(formatProgressLine(ship, { columns: 200 })).toBe(`ship zabbix → 10.0.0.3:7471  sending (delta)  [███████▌${'░'.repeat(22)}]  25%  512 MiB/2.0 GiB  50.0 MiB/s  ETA 31s`);
    expect(formatProgressLine({ ...ship, etaMs: undefined }, { columns: 200 })).toMatch(/ETA --$/);
    expect(formatProgressLine({ label: 'drain ws-1', phase: 'switchover of zabbix', done: 1, total: 3, unit: 'count', startedAt: 0 }, { columns: 80, now: 12_000, ascii: true })).toBe(
      'drain ws-1  switchover of zabbix  [#########...................]  33%  1/3  12s',
    );
    expect(formatProgressLine({ label: 'bootstrap z', phase: 'importing', startedAt: 0 }, { columns: 80, now: 1500 })).toBe('bootstrap z  importing  1.5s');
  });

  it('never exceeds the terminal width: the bar shrinks, then goes, then the label is cut', () => {
    for (let columns = 1; columns <= 160; columns++) {
      const line = formatProgressLine(ship, { columns, paint: painter(true) });
      expect(visibleWidth(line), `columns ${columns}: ${line}`).toBeLessThanOrEqual(Math.max(1, columns - 1));
    }
    const narrow = stripVTControlCharacters(formatProgressLine(ship, { columns: 80 }));
    expect(narrow).not.toContain('[');
    expect(narrow).toMatch(/^ship zabbix → 10\.0\.0\.3:7471  sendin…  25%  512 MiB\/2\.0 GiB  50\.0 MiB\/s  ETA 31s$/);
    const mid = formatProgressLine(ship, { columns: 110 });
    expect(mid).toMatch(/\[[█▌░]{18}\]/);
    expect([...mid]).toHaveLength(109);
  });

  it('colour: bold label, green done part, dim rest; the same text as without colour', () => {
    const c = formatProgressLine(ship, { columns: 200, paint: painter(true) });
    expect(c.startsWith('\u001b[1mship zabbix → 10.0.0.3:7471\u001b[22m')).toBe(true);
    expect(c).toContain('[\u001b[32m███████▌\u001b[39m\u001b[2m░');
    expect(stripVTControlCharacters(c)).toBe(formatProgressLine(ship, { columns: 200 }));
    expect(formatProgressLine({ ...ship, failed: true }, { columns: 120, paint: painter(true) })).toMatch(/^\u001b\[31mship/);
  });

  it('a log line has no bar and no escape codes', () => {
    expect(formatProgressLog(ship)).toBe('ship zabbix → 10.0.0.3:7471: sending (delta) 25% 512 MiB/2.0 GiB 50.0 MiB/s ETA 31s');
    expect(formatProgressLog({ label: 'x', phase: 'y', failed: true })).toBe('x: y (failed)');
  });
});

describe('ProgressBoard', () => {
  afterEach(() => vi.useRealTimers());
  const sink = (isTTY: boolean) => {
    const out: string[] = [];
    return { out, stream: { isTTY, columns: 100, write: (s: string) => out.push(s) } };
  };

  it('on a terminal redraws in place at most every 250 ms', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { out, stream } = sink(true);
    const board = new ProgressBoard({ stream });
    board.set('a', { label: 'op a', phase: 'one' });
    expect(out).toEqual(['op a  one\n']);
    // Ten updates within 100 ms: none drawn yet, one redraw scheduled.
    for (let i = 0; i < 10; i++) {
      vi.advanceTimersByTime(10);
      board.set('a', { label: 'op a', phase: `step ${i}` });
    }
    board.set('b', { label: 'op b', done: 1, total: 2, unit: 'count' });
    expect(out).toHaveLength(1);
    vi.advanceTimersByTime(150);
    expect(out).toHaveLength(2);
    // Cursor up over the one line drawn, erase, both lines.
    expect(out[1]).toMatch(/^\u001b\[1A\r\u001b\[Jop a {2}step 9\nop b {2}\[[█░]+\] {2}50% {2}1\/2\n$/);
    board.note('milestone');
    expect(out[2]).toBe('\u001b[2A\r\u001b[Jmilestone\n');
    expect(out[3]).toMatch(/^op a {2}step 9\nop b/);
    board.remove('b');
    vi.advanceTimersByTime(250);
    expect(out.at(-1)).toBe('\u001b[2A\r\u001b[Jop a  step 9\n');
    board.clearLines();
    expect(out.at(-1)).toBe('\u001b[1A\r\u001b[J');
    board.stop();
    const n = out.length;
    board.set('a', { label: 'late' });
    vi.advanceTimersByTime(1000);
    expect(out).toHaveLength(n);
  });

  it('without a terminal writes plain lines on start, on a phase change, and every logEveryMs', () => {
    vi.useFakeTimers({ now: 0 });
    const { out, stream } = sink(false);
    const board = new ProgressBoard({ stream, logEveryMs: 5000 });
    const item = (done: number, phase = 'sending (full)'): ProgressItem => ({ label: 'ship img → ws-2', phase, done, total: 100 * MiB, unit: 'bytes', rateBps: 10 * MiB, etaMs: ((100 * MiB - done) / (10 * MiB)) * 1000 });
    board.set('t', item(0));
    for (let s = 1; s <= 9; s++) {
      vi.advanceTimersByTime(1000);
      board.set('t', item(s * 10 * MiB));
    }
    board.set('t', item(100 * MiB, 'verifying'));
    board.note('done');
    board.stop();
    expect(out).toEqual([
      'ship img → ws-2: sending (full) 0% 0 B/100 MiB 10.0 MiB/s ETA 10s\n',
      'ship img → ws-2: sending (full) 50% 50.0 MiB/100 MiB 10.0 MiB/s ETA 5s\n',
      'ship img → ws-2: verifying 100% 100 MiB/100 MiB 10.0 MiB/s ETA 0s\n',
      'done\n',
    ]);
    expect(out.join('')).not.toContain('\u001b');
  });
});

describe('transfers and operations as progress', () => {
  const t: TransferRow = { key: 'k', imageId: 'i'.repeat(64), imageName: 'zabbix', target: '10.0.0.3:7471', kind: 'resume', state: 'sending', startedAt: 0, bytesToSend: GiB, bytesSent: GiB / 2, imageBytes: 4 * GiB, rateBps: 10 * MiB };

  it('a transfer: bytes of this transfer, rate, ETA unknown until the depot knows it', () => {
    expect(formatProgressLog(transferItem(t))).toBe('ship zabbix → 10.0.0.3:7471: sending (resume) 50% 512 MiB/1.0 GiB 10.0 MiB/s ETA --');
    expect(formatProgressLog(transferItem({ ...t, etaMs: 51_200 }))).toMatch(/ETA 52s$/);
    expect(formatProgressLog(transferItem({ ...t, state: 'preparing', kind: 'pending', bytesToSend: 0, bytesSent: 0 }), 1500)).toBe('ship zabbix → 10.0.0.3:7471: preparing 1.5s');
    expect(transferItem({ ...t, state: 'failed' }).failed).toBe(true);
  });

  it('staging is read from `staging` or `transfers`; malformed entries are skipped', () => {
    expect(stagingOf({ staging: [{ image: 'a', bytes: 1, total: 2 }, { image: 'b' }] })).toEqual([{ image: 'a', bytes: 1, total: 2 }]);
    expect(stagingOf({ transfers: [{ image: 'c', bytes: 0, total: 5 }] })).toEqual([{ image: 'c', bytes: 0, total: 5 }]);
    expect(stagingOf(null)).toEqual([]);
  });

  it('a transfer target is named by the depot whose address and sshd port it is; staging it covers is not repeated', () => {
    const depots = [
      { name: 'ws-2', state: 'alive', hostAddresses: ['10.0.0.2'], sshPort: 7471, staging: [{ image: t.imageId, bytes: 1, total: 2 }, { image: 'other', bytes: 1, total: 2 }] },
      { name: 'ws-3', state: 'alive', hostAddresses: ['10.0.0.3', 'fd00::3'], sshPort: null, staging: [{ image: t.imageId, bytes: 1, total: 2 }] },
      { name: 'lo-a', state: 'alive', hostAddresses: ['127.0.0.1'], sshPort: 2201 },
      { name: 'lo-b', state: 'dead', hostAddresses: ['127.0.0.1'], sshPort: 2202, staging: [{ image: 'x', bytes: 1, total: 2 }] },
    ];
    expect(depotOf('10.0.0.2:7471', depots)).toBe('ws-2');
    expect(depotOf('10.0.0.2:22', depots)).toBeUndefined();
    expect(depotOf('10.0.0.3:22', depots)).toBe('ws-3');
    expect(depotOf('[fd00::3]:22', depots)).toBe('ws-3');
    expect(depotOf('127.0.0.1:2202', depots)).toBe('lo-b');
    expect(depotOf('127.0.0.1', depots)).toBeUndefined(); // two depots on that address, no port
    expect(depotOf('10.9.9.9:22', depots)).toBeUndefined();
    const toWs2 = { ...t, target: '10.0.0.2:7471' };
    expect(stagingNotShipped([toWs2], depots).map((s) => `${s.depot}/${s.entry.image.slice(0, 5)}`)).toEqual(['ws-2/other', 'ws-3/iiiii']);
    // A target that is no known depot could be any of them: its image is not repeated anywhere.
    expect(stagingNotShipped([{ ...t, target: '10.9.9.9:22' }], depots).map((s) => s.depot)).toEqual(['ws-2']);
    expect(formatProgressLog(transferItem(toWs2, depotOf(toWs2.target, depots)))).toMatch(/^ship zabbix → ws-2: /);
    expect(imageNames([], [{ containers: [{ service: 'grafana', image: 'g1' }, { service: 'x' }] }]).get('g1')).toBe('grafana');
    expect(imageNames([t], [{ containers: [{ service: 'other', image: t.imageId }] }]).get(t.imageId)).toBe('zabbix');
  });

  it('bootstrap: waiting for the primary, choosing a host, shipping (with the bar), booting the standby', () => {
    const base = { service: 'zabbix', image: t.imageId, standbys: 1, startedAt: 0, transfers: [] as TransferRow[], depots: [] };
    const copy = (host: string, role: 'primary' | 'standby', state: string) => ({ host, role, term: 1, state, since: null, lastSyncAt: null });
    const view = (...copies: ReturnType<typeof copy>[]) => ({ service: 'zabbix', address: '', term: 1, copies });
    expect(bootstrapBoard({ ...base, view: undefined }).items[0]![1].phase).toBe('waiting for the primary (election, address, start)');
    expect(bootstrapBoard({ ...base, view: view(copy('ws-1', 'primary', 'running')) }).items[0]![1].phase).toBe('primary on ws-1; standby 1/1: choosing a host');
    const shipping = bootstrapBoard({ ...base, view: view(copy('ws-1', 'primary', 'running')), transfers: [t, { ...t, key: 'other', imageId: 'o'.repeat(64) }] });
    expect(shipping.items.map(([k]) => k)).toEqual(['bootstrap', 'transfer:k']);
    expect(shipping.items[0]![1].phase).toBe('primary on ws-1; standby 1/1: shipping the image');
    // A receiving depot seen only through its heartbeat (the shipper is another depot).
    const staged = bootstrapBoard({ ...base, view: view(copy('ws-1', 'primary', 'running')), depots: [{ name: 'ws-3', state: 'alive', staging: [{ image: t.imageId, bytes: 1, total: 4 }] }] });
    expect(staged.items[1]).toEqual(['staging:ws-3:' + t.imageId, { label: 'receive iiiiiiiiiiii on ws-3', done: 1, total: 4, unit: 'bytes' }]);
    const booting = bootstrapBoard({ ...base, view: view(copy('ws-1', 'primary', 'running'), copy('ws-2', 'standby', 'starting')) });
    expect(booting.items[0]![1]).toMatchObject({ phase: 'primary on ws-1; standby 1/1: starting on ws-2', done: 0, total: 1, unit: 'count' });
  });

  it('drain: primaries left on the host, the one moving now, every transfer', () => {
    const primary = (service: string) => ({ service, role: 'primary' });
    const depots = [
      { name: 'ws-1', state: 'alive', containers: [primary('b'), primary('a'), { service: 'c', role: 'standby' }] },
      { name: 'ws-2', state: 'alive', containers: [primary('d')], staging: [{ image: 'x', bytes: 5, total: 10 }] },
    ];
    expect(primariesOn('ws-1', depots)).toEqual(['a', 'b']);
    const start = drainBoard({ host: 'ws-1', initial: ['a', 'b'], startedAt: 0, transfers: [], depots });
    expect(start.items[0]![1]).toMatchObject({ label: 'drain ws-1', phase: 'switchover of a (2 of 2 left on ws-1)', done: 0, total: 2 });
    expect(start.items.map(([k]) => k)).toEqual(['drain', 'staging:ws-2:x']);
    const half = drainBoard({ host: 'ws-1', initial: ['a', 'b'], startedAt: 0, transfers: [t], depots: [{ ...depots[0]!, containers: [primary('b')] }] });
    expect(half.items[0]![1]).toMatchObject({ phase: 'switchover of b (1 of 2 left on ws-1)', done: 1, total: 2 });
    expect(half.items[1]![0]).toBe('transfer:k');
    expect(drainBoard({ host: 'ws-1', initial: ['a'], startedAt: 0, transfers: [], depots: [] }).items[0]![1].phase).toBe('all 1 moved; waiting for the depot to confirm');
    expect(drainBoard({ host: 'ws-9', initial: [], startedAt: 0, transfers: [], depots: [] }).items[0]![1]).not.toHaveProperty('total');
  });
});
