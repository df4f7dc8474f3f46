/**
 * A key or path as one line of a table or report: control characters (a name may hold a newline or a tab) are
 * shown as C escapes, as `ls -b` does, so a row never breaks and a name never rewrites the terminal.
 */
const NAMED: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r', '\\': '\\\\' };

export function printable(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f\\]/g, (c) => NAMED[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
