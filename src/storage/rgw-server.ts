/**
 * A throw-away single-node Ceph RADOS Gateway on loopback (Debian's radosgw, ceph-mon, ceph-osd; see
 * ../shared/spec/rgw.md): one monitor, one memstore OSD, radosgw (beast). A real S3 implementation, started by the
 * tests and the benchmark for what s3rver lacks: versioning, signature checks, multipart copy. Everything lives in
 * a temp dir; stop() signals only the daemons whose command line names this cluster's ceph.conf, then removes it.
 */
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RgwServer {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  dir: string;
  stop(): Promise<void>;
}

export class RgwUnavailableError extends Error {}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function sh(cmd: string, args: string[], input?: string): Promise<string> {
  if (input === undefined) return (await run(cmd, args, { maxBuffer: 16 << 20 })).stdout;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err}`))));
    child.stdin.end(input);
  });
}

async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`RGW: ${what} did not come up within ${timeoutMs} ms`);
}

export async function startRgwServer(options: { accessKeyId?: string; secretAccessKey?: string; memBytes?: number } = {}): Promise<RgwServer> {
  for (const bin of ['ceph-mon', 'ceph-osd', 'radosgw', 'ceph-authtool', 'monmaptool', 'radosgw-admin']) {
    if (!['/usr/bin', '/usr/sbin'].some((d) => existsSync(path.join(d, bin)))) {
      throw new RgwUnavailableError(`${bin} is missing: install the Debian packages radosgw ceph-mon ceph-osd (scripts/install.sh --test does)`);
    }
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3vault-rgw-'));
  const accessKeyId = options.accessKeyId ?? 'S3VAULTTESTKEY';
  const secretAccessKey = options.secretAccessKey ?? 'S3VAULTTESTSECRET0123456789';
  const monPort = await freePort();
  const rgwPort = await freePort();
  const conf = path.join(dir, 'ceph.conf');
  const keyring = path.join(dir, 'keyring');
  const fsid = randomUUID();
  const stop = async () => {
    // Only daemons started with this ceph.conf: never a reused PID.
    const ours = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(conf);
      } catch {
        return false;
      }
    };
    const pids = (existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.pid')) : [])
      .map((f) => Number(readFileSync(path.join(dir, f), 'utf8').trim()))
      .filter(ours);
    for (const pid of pids) process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && pids.some(ours)) await new Promise((r) => setTimeout(r, 100));
    for (const pid of pids.filter(ours)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const d of ['mon', 'osd', 'run', 'rgw']) mkdirSync(path.join(dir, d));
    writeFileSync(
      conf,
      `[global]
fsid = ${fsid}
mon_host = [v2:127.0.0.1:${monPort}]
mon_initial_members = a
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = ${keyring}
run_dir = ${dir}/run
admin_socket = ${dir}/run/$name.asok
pid_file = ${dir}/$name.pid
log_file = ${dir}/$name.log
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 1
mon_data_avail_crit = 1
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
ms_bind_ipv4 = true
ms_bind_ipv6 = false
public_addr = 127.0.0.1
[mon.a]
mon_data = ${dir}/mon
[osd.0]
osd_data = ${dir}/osd
osd_objectstore = memstore
memstore_device_bytes = ${options.memBytes ?? 8 * 1024 ** 3}
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
rgw_dns_name = localhost
`,
    );
    await sh('ceph-authtool', ['--create-keyring', keyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await sh('ceph-authtool', [keyring, '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mds', 'allow *', '--cap', 'mgr', 'allow *']);
    await sh('ceph-authtool', [keyring, '--gen-key', '-n', 'osd.0', '--cap', 'mon', 'allow profile osd', '--cap', 'osd', 'allow *']);
    await sh('ceph-authtool', [keyring, '--gen-key', '-n', 'client.rgw', '--cap', 'mon', 'allow rw', '--cap', 'osd', 'allow rwx']);
    const monmap = path.join(dir, 'monmap');
    await sh('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, monmap]);
    await sh('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', keyring]);
    await sh('ceph-mon', ['-c', conf, '-i', 'a']);
    const ceph = (args: string[], input?: string) => sh('ceph', ['-c', conf, '--connect-timeout', '20', ...args], input);
    const uuid = randomUUID();
    await ceph(['osd', 'new', uuid, '0']);
    await sh('ceph-osd', ['-c', conf, '-i', '0', '--mkfs', '--osd-uuid', uuid]);
    await sh('ceph-osd', ['-c', conf, '-i', '0']);
    const pools = ['.rgw.root', 'default.rgw.log', 'default.rgw.control', 'default.rgw.meta', 'default.rgw.buckets.index', 'default.rgw.buckets.data', 'default.rgw.buckets.non-ec'];
    await ceph([], [...pools.map((p) => `osd pool create ${p} 8 8`), ...pools.map((p) => `osd pool application enable ${p} rgw`), 'health mute MGR_DOWN'].join('\n') + '\n');
    await sh('radosgw', ['-c', conf, '-n', 'client.rgw']);
    await waitFor('radosgw', 60_000, async () => {
      const s = net.connect(rgwPort, '127.0.0.1');
      return new Promise<boolean>((resolve) => {
        s.on('connect', () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      });
    });
    await sh('radosgw-admin', ['-c', conf, '-n', 'client.admin', 'user', 'create', '--uid=s3vault', '--display-name=s3vault tests', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`]);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    // A signed request must work before anyone uses it (the user takes a moment to reach radosgw).
    const { S3Client, ListBucketsCommand } = await import('@aws-sdk/client-s3');
    const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });
    await waitFor('a signed ListBuckets', 60_000, async () => (await client.send(new ListBucketsCommand({})), true));
    client.destroy();
    return { endpoint, accessKeyId, secretAccessKey, dir, stop };
  } catch (err) {
    const logs = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.log')).map((f) => `${f}: ${readFileSync(path.join(dir, f), 'utf8').split('\n').slice(-5).join('\n')}`).join('\n') : '';
    await stop();
    throw new Error(`cannot start the RGW test server: ${(err as Error).message}\n${logs}`);
  }
}
