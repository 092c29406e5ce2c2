import { describe, it, expect } from 'vitest';
import { stripVTControlCharacters } from 'node:util';
import { colourEnabled, painter, visibleWidth } from '../../cli/colour.ts';
import { renderTable } from '../../cli/table.ts';

describe('colourEnabled', () => {
  const tty = { isTTY: true };
  const pipe = { isTTY: false };

  it('follows the terminal when nothing is set', () => {
    expect(colourEnabled(tty, {})).toBe(true);
    expect(colourEnabled(pipe, {})).toBe(false);
    expect(colourEnabled({}, {})).toBe(false);
  });

  it('NO_COLOR (non-empty) and TERM=dumb turn it off on a terminal; an empty NO_COLOR does not', () => {
    expect(colourEnabled(tty, { NO_COLOR: '1' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: 'anything' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: '' })).toBe(true);
    expect(colourEnabled(tty, { TERM: 'dumb' })).toBe(false);
  });

  it('FORCE_COLOR forces it on for a pipe (over NO_COLOR), FORCE_COLOR=0/false forces it off', () => {
    expect(colourEnabled(pipe, { FORCE_COLOR: '1' })).toBe(true);
    expect(colourEnabled(pipe, { FORCE_COLOR: '3' })).toBe(true);
    expect(colourEnabled(pipe, { FORCE_COLOR: 'true', NO_COLOR: '1' })).toBe(true);
    expect(colourEnabled(tty, { FORCE_COLOR: '0' })).toBe(false);
    expect(colourEnabled(tty, { FORCE_COLOR: 'false' })).toBe(false);
    expect(colourEnabled(pipe, { FORCE_COLOR: '' })).toBe(false);
  });
});

describe('painter', () => {
  it('adds SGR codes only when enabled, and measures text without them', () => {
    const on = painter(true);
    const off = painter(false);
    expect(on.enabled).toBe(true);
    expect(off.enabled).toBe(false);
    expect(on('green', 'alive')).toBe('\u001b[32malive\u001b[39m');
    expect(on(['bold', 'cyan'], 'primary')).toBe('\u001b[1m\u001b[36mprimary\u001b[39m\u001b[22m');
    expect(on(undefined, 'x')).toBe('x');
    expect(off('red', 'dead')).toBe('dead');
    expect(visibleWidth(on('red', 'dead…'))).toBe(5);
  });
});

describe('renderTable', () => {
  const head = ['NAME', 'STATE', 'NOTE'];
  const rows = [
    ['ws-1', { text: 'alive', style: 'green' as const }, 'ok'],
    ['a-much-longer-name', { text: 'suspect', style: 'yellow' as const }, ''],
    ['ws-3', { text: 'dead', style: ['red', 'bold'] as const }, 'since 5m'],
  ];

  it('aligns on the plain text, so colour codes do not move the columns', () => {
    const plain = renderTable(head, rows, { paint: painter(false) });
    const coloured = renderTable(head, rows, { paint: painter(true) });
    expect(plain.join('\n')).not.toContain('\u001b[');
    expect(coloured.join('\n')).toContain('\u001b[33msuspect\u001b[39m');
    expect(coloured.map((l) => stripVTControlCharacters(l))).toEqual(plain);
    const col = plain[0]!.indexOf('STATE');
    expect(col).toBe('a-much-longer-name'.length + 2);
    for (const line of plain.slice(1)) expect(line.slice(col)).toMatch(/^(alive|suspect|dead)/);
    // Padding stays outside the codes: a styled cell is followed by plain spaces.
    expect(coloured[1]).toContain('\u001b[32malive\u001b[39m    ok');
  });

  it('leaves no trailing spaces, uses the row style as a fallback, and pre-coloured cells when colour is on', () => {
    const plain = renderTable(head, rows, { paint: painter(false) });
    for (const l of plain) expect(l).toBe(l.trimEnd());
    expect(plain[2]).toBe('a-much-longer-name  suspect');
    const dimmed = renderTable(['A', 'B'], [['x', { text: 'y', style: 'red' }]], { paint: painter(true), rowStyle: () => 'dim' });
    expect(dimmed[1]).toBe('\u001b[2mx\u001b[22m  \u001b[31my\u001b[39m');
    const own = [['x', { text: '[##..]', styled: '[GREEN##..]' }]];
    expect(renderTable(['A', 'B'], own, { paint: painter(true) })[1]).toBe('x  [GREEN##..]');
    expect(renderTable(['A', 'B'], own, { paint: painter(false) })[1]).toBe('x  [##..]');
  });
});
