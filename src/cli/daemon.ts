/**
 * Background mounts: the command re-runs itself in the foreground in a detached child whose output goes to
 * a log file, and waits on a pipe (fd 3) for one message: mounted, or why not. So `s3vault mount` returns
 * only once the mount works, with the child's exit code and error line when it does not.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT } from './exit-codes.js';

const BIN = fileURLToPath(new URL('../../bin/s3vault.js', import.meta.url));

export interface DaemonMessage {
  ok: boolean;
  message: string;
  exit: number;
}

export async function runInBackground(args: string[], logFile: string): Promise<DaemonMessage> {
  mkdirSync(path.dirname(logFile), { recursive: true });
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [BIN, ...args, '--foreground', '--notify-fd', '3'], { detached: true, stdio: ['ignore', out, out, 'pipe'] });
  closeSync(out);
  return new Promise((resolve) => {
    let text = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const line = text.split('\n')[0];
      if (text.includes('\n') && line) {
        const msg = JSON.parse(line) as DaemonMessage;
        if (msg.ok) child.unref();
        (pipe as unknown as { destroy(): void }).destroy();
        resolve(msg);
      }
    });
    child.once('exit', (code) => resolve({ ok: false, message: `s3vault stopped before mounting (exit code ${code}); see ${logFile}`, exit: code || EXIT.ERROR }));
  });
}

/** In the background child: tell the waiting parent how the mount went. */
export function notifyParent(fd: number, msg: DaemonMessage): void {
  try {
    writeSync(fd, `${JSON.stringify(msg)}\n`);
    closeSync(fd);
  } catch {
    // The parent is gone: nobody to tell.
  }
}
