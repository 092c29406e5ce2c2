import type { Painter, Style } from './colour.ts';

// Aligned text tables for human output. Widths come from the plain text and padding is added
// outside the escape codes, so columns line up the same with colour on or off.

/** A cell: plain text, text with a style, or text with its own pre-coloured rendering
 * (`styled`, used when colour is on; it must show exactly `text`). */
export type Cell = string | { text: string; style?: Style | readonly Style[] | undefined; styled?: string };

export interface TableOptions {
  paint: Painter;
  /** Style of the header row (default bold). */
  headStyle?: Style | readonly Style[];
  /** Style for every cell of a row that has no style of its own. */
  rowStyle?: (index: number) => Style | readonly Style[] | undefined;
  /** Spaces between columns (default 2). */
  gap?: number;
}

const textOf = (c: Cell) => (typeof c === 'string' ? c : c.text);
const styleOf = (c: Cell) => (typeof c === 'string' ? undefined : c.style);
const styledOf = (c: Cell) => (typeof c === 'string' ? undefined : c.styled);

/** One line per row, header first; the last column is not padded (no trailing spaces). */
export function renderTable(head: readonly string[], rows: readonly (readonly Cell[])[], opts: TableOptions): string[] {
  const gap = ' '.repeat(opts.gap ?? 2);
  const widths = head.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...textOf(r[i] ?? '')].length)));
  const line = (cells: readonly Cell[], fallback: Style | readonly Style[] | undefined) => {
    // Drop empty trailing cells so a short last value leaves no trailing spaces.
    let last = cells.length - 1;
    while (last > 0 && textOf(cells[last]!) === '') last--;
    const out: string[] = [];
    for (let i = 0; i <= last; i++) {
      const text = textOf(cells[i]!);
      const own = styledOf(cells[i]!);
      const styled = own !== undefined && opts.paint.enabled ? own : opts.paint(styleOf(cells[i]!) ?? fallback, text);
      out.push(i === last ? styled : styled + ' '.repeat(widths[i]! - [...text].length));
    }
    return out.join(gap);
  };
  return [line(head, opts.headStyle ?? 'bold'), ...rows.map((r, i) => line(r, opts.rowStyle?.(i)))];
}
