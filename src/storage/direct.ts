/**
 * Requests sent without the SDK's middleware, for the three that dominate a mount's traffic:
 * - HEAD of an object: a cold `ls -l` or `stat` of many files sends one per file, and the SDK spends most of a
 *   HEAD's CPU in its middleware (endpoint rules and a copy of the client config per request, schema walks, retry
 *   bookkeeping). Measured on this 2-core VM, 4000 HEADs 16 at a time against s3rver: 1.0 ms of CPU each through
 *   the SDK (middleware cached), 0.42 ms each here.
 * - a ranged GET into a vault data file, by libcurl (curl.ts), when it is installed: the body never enters
 *   JavaScript.
 * - PUT of a small file's whole object (the upload of each file `cp -r`, `tar x` or `git clone` writes).
 *
 * Only the plain answers are taken here: 200/404 for a HEAD, 206 with the expected ETag for a GET, 200 with an
 * ETag for a PUT. Anything else — 403, a redirect to another region, 5xx, throttling, a timeout, a reset — gives
 * `undefined`, and the caller sends the request again through the SDK, which retries and reports it as it does
 * every other request. The endpoint
 * and the signing scope are the SDK's own, resolved once; endpoints that need another signer (S3 Express,
 * multi-region access points, object lambda) or extra headers are left to the SDK entirely.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getEndpointFromInstructions } from '@smithy/core/endpoints';
import { SignatureV4 } from '@smithy/signature-v4';
import { Curl } from './curl.js';
import type { ObjectMeta } from './driver.js';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const META_PREFIX = 'x-amz-meta-';

export interface HeadAnswer {
  size: number;
  etag: string;
  lastModified: Date;
  meta: ObjectMeta;
  contentType?: string;
}

interface Target {
  url: URL;
  /** The request path of the bucket's root: "/bucket" path-style, "" virtual-hosted. */
  base: string;
  signer: SignatureV4;
}

const unquote = (etag: unknown): string => (typeof etag === 'string' ? etag : '').replace(/^"|"$/g, '');

/** A key as S3 wants it in a path: each segment percent-encoded, RFC 3986 (the SDK's extendedEncodeURIComponent). */
function encodeKey(key: string): string {
  return key
    .split('/')
    .map((s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()))
    .join('/');
}

export class DirectRequests {
  private target: Promise<Target | null> | undefined;
  /** null: libcurl is not installed. Loaded on the first GET. */
  private curl: Curl | null | undefined;
  /** Requests answered here, and requests handed over to the SDK (for tests and status). */
  readonly counts = { head: 0, headHandedOver: 0, get: 0, getHandedOver: 0, put: 0, putHandedOver: 0 };

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly agents: { http: http.Agent; https: https.Agent },
    private readonly timeouts: { connectMs: number; idleMs: number },
  ) {}

  /** The object (null: there is none), or undefined: ask through the SDK. `key` is the full key. */
  async head(key: string): Promise<HeadAnswer | null | undefined> {
    const t = await this.resolved();
    const answer = t ? await this.sendHead(t, key).catch(() => undefined) : undefined;
    if (answer === undefined) this.counts.headHandedOver++;
    else this.counts.head++;
    return answer;
  }

  /**
   * Bytes [offset, offset + length) of the object `key` (full key) with ETag `etag`, written into the open file
   * `fd` from `fileOffset`. True when they all arrived; false: nothing is known of what the file holds there,
   * ask through the SDK (which also reports a changed object).
   */
  async getToFile(key: string, offset: number, length: number, etag: string, fd: number, fileOffset: number): Promise<boolean> {
    // Loaded once: `??=` would try again on every GET where libcurl is missing (null).
    if (this.curl === undefined) this.curl = Curl.load();
    const t = this.curl ? await this.resolved() : null;
    let ok = false;
    if (t && this.curl) {
      const path = `${t.base}/${encodeKey(key)}`;
      const signed = await this.sign(t, 'GET', path, { range: `bytes=${offset}-${offset + length - 1}`, 'if-match': `"${etag}"`, 'x-amz-content-sha256': EMPTY_SHA256 });
      const headers = Object.entries(signed).filter(([name]) => name !== 'host').map(([name, value]) => `${name}: ${value}`);
      const r = await this.curl.getToFile(`${t.url.origin}${path}`, headers, fd, fileOffset, this.timeouts).catch(() => undefined);
      // Servers that ignore If-Match still say which object they sent: never mix two versions of a file.
      ok = r !== undefined && r.code === 0 && r.status === 206 && r.bytes === length && r.etag !== undefined && unquote(r.etag) === etag;
    }
    if (ok) this.counts.get++;
    else this.counts.getHandedOver++;
    return ok;
  }

  /**
   * PUT of a whole object (`key` the full key) with its metadata: its ETag and version, or undefined: send it
   * through the SDK.
   */
  async put(key: string, body: Buffer, meta: ObjectMeta | undefined, contentType: string | undefined): Promise<{ etag: string; versionId?: string } | undefined> {
    const t = await this.resolved();
    const answer = t ? await this.sendPut(t, key, body, meta, contentType).catch(() => undefined) : undefined;
    if (answer === undefined) this.counts.putHandedOver++;
    else this.counts.put++;
    return answer;
  }

  close(): void {
    this.curl?.close();
  }

  private resolved(): Promise<Target | null> {
    return (this.target ??= this.resolve().catch(() => null));
  }

  private async resolve(): Promise<Target | null> {
    const config = this.client.config;
    const ep = await getEndpointFromInstructions({ Bucket: this.bucket, Key: 'k' }, HeadObjectCommand, config as unknown as Parameters<typeof getEndpointFromInstructions>[2]);
    const scheme = (ep.properties?.authSchemes as { name?: string; signingName?: string; signingRegion?: string }[] | undefined)?.[0];
    if (scheme && (scheme.name !== 'sigv4' || (scheme.signingName ?? 's3') !== 's3')) return null;
    if (ep.headers && Object.keys(ep.headers).length > 0) return null;
    const url = new URL(ep.url.href);
    const region = scheme?.signingRegion ?? (await config.region());
    const signer = new SignatureV4({ credentials: config.credentials, region, service: 's3', sha256: config.sha256, uriEscapePath: false });
    return { url, base: url.pathname.replace(/\/+$/, ''), signer };
  }

  private async sendHead(t: Target, key: string): Promise<HeadAnswer | null | undefined> {
    const res = await this.send(t, 'HEAD', key, { 'x-amz-content-sha256': EMPTY_SHA256 });
    if (res?.status === 404) return null;
    if (res?.status !== 200) return undefined;
    const h = res.headers;
    const meta: ObjectMeta = {};
    for (const [name, value] of Object.entries(h)) if (name.startsWith(META_PREFIX) && typeof value === 'string') meta[name.slice(META_PREFIX.length)] = value;
    const size = Number(h['content-length']);
    const lastModified = new Date(h['last-modified'] ?? 0);
    if (!Number.isFinite(size) || Number.isNaN(lastModified.getTime())) return undefined;
    return { size, etag: unquote(h.etag), lastModified, meta, contentType: h['content-type'] };
  }

  private async sendPut(t: Target, key: string, body: Buffer, meta: ObjectMeta | undefined, contentType: string | undefined): Promise<{ etag: string; versionId?: string } | undefined> {
    // As the SDK does: the payload's hash signed over plain HTTP, unsigned over TLS.
    const payload = t.url.protocol === 'https:' ? 'UNSIGNED-PAYLOAD' : createHash('sha256').update(body).digest('hex');
    const headers: Record<string, string> = { 'content-length': String(body.length), 'x-amz-content-sha256': payload };
    if (contentType) headers['content-type'] = contentType;
    for (const [k, v] of Object.entries(meta ?? {})) headers[META_PREFIX + k.toLowerCase()] = v;
    const res = await this.send(t, 'PUT', key, headers, body);
    if (res?.status !== 200 || typeof res.headers.etag !== 'string') return undefined;
    const version = res.headers['x-amz-version-id'];
    return { etag: unquote(res.headers.etag), versionId: typeof version === 'string' ? version : undefined };
  }

  /** One signed request on the SDK's agents: its status and headers (the body, if any, drained), or undefined. */
  private async send(t: Target, method: string, key: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders } | undefined> {
    const path = `${t.base}/${encodeKey(key)}`;
    const port = t.url.port ? Number(t.url.port) : undefined;
    const signed = await this.sign(t, method, path, headers);
    const tls = t.url.protocol === 'https:';
    return new Promise((resolve) => {
      const req = (tls ? https : http).request({ agent: tls ? this.agents.https : this.agents.http, hostname: t.url.hostname, port, method, path, headers: signed }, (res) => {
        res.resume();
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
        res.once('error', () => resolve(undefined));
      });
      // As the SDK's handler: connectMs to connect, then idleMs without a byte either way.
      req.once('socket', (socket) => {
        if (!socket.pending) return; // a kept-alive connection
        const timer = setTimeout(() => req.destroy(new Error('connect timeout')), this.timeouts.connectMs);
        const done = () => clearTimeout(timer);
        socket.once('connect', done);
        req.once('close', done);
      });
      req.setTimeout(this.timeouts.idleMs, () => req.destroy(new Error('timeout')));
      req.once('error', () => resolve(undefined));
      req.end(body);
    });
  }

  /** The headers signed for a request on `path` (already encoded), at the SDK's corrected clock. */
  private async sign(t: Target, method: string, path: string, headers: Record<string, string>): Promise<Record<string, string>> {
    // The SDK keeps the offset a server's clock showed from ours (after a RequestTimeTooSkewed); so do these requests.
    const offset = (this.client.config as { systemClockOffset?: number }).systemClockOffset ?? 0;
    const request = { method, protocol: t.url.protocol, hostname: t.url.hostname, port: t.url.port ? Number(t.url.port) : undefined, path, query: {}, headers: { host: t.url.host, ...headers } };
    return (await t.signer.sign(request, { signingDate: new Date(Date.now() + offset) })).headers;
  }
}
