import { styleText, stripVTControlCharacters } from 'node:util';

// Colour for human output, shared by every command. One decision (colourEnabled) says whether
// a stream gets escape codes; everything else takes a Painter so the same formatting code
// produces plain text for pipes, files and tests.

export type Style = 'bold' | 'dim' | 'red' | 'green' | 'yellow' | 'cyan' | 'gray';

/** Wraps text in the escape codes of one or more styles, or returns it unchanged. */
export interface Painter {
  (style: Style | readonly Style[] | undefined, text: string): string;
  /** Whether this painter adds escape codes. */
  readonly enabled: boolean;
}

type Env = Record<string, string | undefined>;

/**
 * Colour on or off for `stream`. FORCE_COLOR (any value but "0"/"false") forces it on even
 * for a pipe, and wins over NO_COLOR as it does in Node itself; FORCE_COLOR=0 forces it off;
 * NO_COLOR (non-empty, https://no-color.org) or TERM=dumb turns it off; otherwise colour
 * exactly when the stream is a terminal.
 */
export function colourEnabled(stream: { isTTY?: boolean } = process.stdout, env: Env = process.env): boolean {
  const force = env.FORCE_COLOR;
  if (force !== undefined && force !== '') return force !== '0' && force.toLowerCase() !== 'false';
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

/** A painter that colours (enabled) or leaves text as it is. */
export function painter(enabled: boolean): Painter {
  if (!enabled) return Object.assign((_style: Style | readonly Style[] | undefined, text: string) => text, { enabled: false });
  // validateStream: false — the decision was made by colourEnabled, for the stream the text goes to.
  const paint = (style: Style | readonly Style[] | undefined, text: string) =>
    style === undefined || text === '' ? text : styleText(typeof style === 'string' ? style : [...style], text, { validateStream: false });
  return Object.assign(paint, { enabled: true });
}

/** The painter that never colours. */
export const noColour: Painter = painter(false);

/** The painter for process.stdout under the current environment. */
export function stdoutPainter(): Painter {
  return painter(colourEnabled(process.stdout));
}

/** Columns the text takes on screen (escape codes take none). */
export function visibleWidth(text: string): number {
  return [...stripVTControlCharacters(text)].length;
}
