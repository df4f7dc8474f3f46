/** Structured logging (pino). Every layer takes a Logger; only the CLI decides where it goes and how verbose. */
import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = Pick<PinoLogger, 'debug' | 'info' | 'warn' | 'error' | 'child'>;

export function createLogger(options: { verbose?: boolean; file?: string } = {}): Logger {
  const level = options.verbose ? 'debug' : 'info';
  const dest = options.file ? pino.destination({ dest: options.file, mkdir: true, sync: true }) : pino.destination({ dest: 2, sync: true });
  return pino({ level, base: { pid: process.pid } }, dest);
}

/** A logger that drops everything (unit tests, library use without logs). */
export const silentLogger: Logger = pino({ level: 'silent' });
