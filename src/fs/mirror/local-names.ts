/**
 * Local files (CBCache R44): names that live only in the vault and never reach the bucket — editor swap and
 * lock files, desktop litter. Patterns match the file's name (not its path) with `*` and `?`, as CBFS's
 * FileMatchesMask does; they come from config (`fs.localPatterns`).
 */
export const DEFAULT_LOCAL_PATTERNS = ['.*.swp', '.*.swo', '.*.swx', '.~lock.*#', '.#*', '.DS_Store', '._*', 'Thumbs.db', 'desktop.ini'];

function toRegExp(glob: string): RegExp {
  let re = '';
  for (const ch of glob) re += ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${re}$`, 's');
}

export class LocalNames {
  private readonly res: RegExp[];

  constructor(patterns: string[] = DEFAULT_LOCAL_PATTERNS) {
    this.res = patterns.map(toRegExp);
  }

  matches(path: string): boolean {
    const name = path.slice(path.lastIndexOf('/') + 1);
    return this.res.some((re) => re.test(name));
  }
}
