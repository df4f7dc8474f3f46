// An HTTP proxy in its own process that forwards everything to a target and appends "METHOD URL" per request to
// a log file: what the read-only tests check (no request that changes the bucket). Its own process, so tests
// may block on shell commands against a mount that talks through it.
//   node request-log-proxy.mjs <targetPort> <logFile>   → prints "listening <port>"
import { appendFileSync } from 'node:fs';
import http from 'node:http';

const [targetPort, logFile] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const server = http.createServer((req, res) => {
  appendFileSync(logFile, `${req.method} ${req.url}\n`);
  const up = http.request({ host: '127.0.0.1', port: Number(targetPort), method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
