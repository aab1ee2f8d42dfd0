/**
 * Reading JSON an admin edits by hand: `JSON.parse`, and when that fails, the line and column of the first error
 * (V8 does not always say where), so the message can point at the typo. A leading BOM (Notepad writes one) is skipped.
 */

/** Invalid JSON: V8's own message, and where the error is (1-based; null when it could not be located). */
export class JsonSyntaxError extends Error {
  constructor(
    readonly reason: string,
    readonly line: number | null,
    readonly column: number | null,
  ) {
    super(line === null ? `not valid JSON (${reason}).` : `not valid JSON at line ${line}, column ${column} (${reason}).`);
  }
}

/** Parse `text` (a leading BOM ignored). Throws JsonSyntaxError with the error's line and column. */
export function parseJsonText(text: string): unknown {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (err) {
    const reason = (err as Error).message;
    const pos = /position (\d+)/.exec(reason);
    const offset = pos ? Number(pos[1]) : jsonErrorOffset(body);
    if (offset === null) throw new JsonSyntaxError(reason, null, null);
    const { line, column } = lineColumn(body, offset);
    throw new JsonSyntaxError(reason, line, column);
  }
}

/** 1-based line and column of a character offset. */
function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { line, column };
}

const LITERAL = /true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * Offset of the first JSON syntax error. A small scanner that only checks structure; JSON.parse has already said the
 * text is invalid, so this just locates it. Null when it finds nothing.
 */
function jsonErrorOffset(text: string): number | null {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        string();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail();
      }
    } else if (c === '"') string();
    else {
      // Sticky (y) regex at lastIndex: matching in place keeps the scan linear (a slice per value was quadratic).
      LITERAL.lastIndex = i;
      const m = LITERAL.exec(text);
      if (!m) fail();
      i += m![0].length;
    }
  };
  const string = (): void => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      else if (text.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  try {
    value();
    ws();
    return i < text.length ? i : null;
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, text.length) : null;
  }
}
