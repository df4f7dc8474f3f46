/**
 * A loopback TCP proxy between s3vault and an S3 server that misbehaves on demand: it can delay traffic,
 * reset or drop connections, answer 503 SlowDown or 500 InternalError, refuse everything (server gone), or take
 * requests in and never answer (a server hung: only the client's own timeouts end such a request), or hold each
 * request a second (`slow`, on open connections too: a request a test wants to happen while another waits).
 * Real sockets, real HTTP: what the SDK's retry logic and the vault's error states meet in the field.
 */
import net from 'node:net';

export type FaultMode = 'pass' | 'delay' | 'reset' | 'drop' | 'slowdown' | 'error500' | 'down' | 'stall' | 'slow';

/** How long `slow` holds each piece of a request. */
const SLOW_MS = 1000;

export interface FaultProxy {
  endpoint: string;
  port: number;
  setMode(mode: FaultMode): void;
  /** Resolves when a request whose bytes match `pattern` (its headers: x-amz-copy-source) reaches the proxy. */
  waitFor(pattern: RegExp): Promise<void>;
  stats: Record<FaultMode, number>;
  close(): Promise<void>;
}

const reply = (status: string, code: string) =>
  `HTTP/1.1 ${status}\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: ${`<?xml version="1.0"?><Error><Code>${code}</Code><Message>injected</Message></Error>`.length}\r\n\r\n<?xml version="1.0"?><Error><Code>${code}</Code><Message>injected</Message></Error>`;

export async function startFaultProxy(targetPort: number, port = 0): Promise<FaultProxy> {
  let mode: FaultMode = 'pass';
  const stats = { pass: 0, delay: 0, reset: 0, drop: 0, slowdown: 0, error500: 0, down: 0, stall: 0, slow: 0 } as Record<FaultMode, number>;
  const waiting: { pattern: RegExp; resolve: () => void }[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    const m = mode;
    stats[m]++;
    if (m === 'down' || m === 'reset') return void client.resetAndDestroy();
    if (m === 'drop') return void setTimeout(() => client.destroy(), 200);
    if (m === 'stall') return void client.resume(); // read and discard, never answer
    if (m === 'slowdown' || m === 'error500') {
      client.once('data', () => client.end(m === 'slowdown' ? reply('503 Slow Down', 'SlowDown') : reply('500 Internal Server Error', 'InternalError')));
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    if (m === 'delay') {
      client.pause();
      setTimeout(() => client.resume(), 300 + Math.floor(Math.random() * 700));
    }
    // Piece by piece, so that `slow` holds requests on connections already open (the SDK keeps them alive).
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      for (const w of waiting.filter((x) => x.pattern.test(text))) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
      if (mode !== 'slow') return void upstream.write(chunk);
      stats.slow++;
      client.pause();
      setTimeout(() => {
        upstream.write(chunk);
        client.resume();
      }, SLOW_MS);
    });
    client.on('end', () => upstream.end());
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  const actual = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${actual}`,
    port: actual,
    stats,
    waitFor: (pattern) => new Promise<void>((resolve) => waiting.push({ pattern, resolve })),
    setMode: (m) => {
      mode = m;
      // Existing keep-alive connections would bypass a new failure mode: cut them.
      if (m !== 'pass' && m !== 'delay' && m !== 'slow') for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
