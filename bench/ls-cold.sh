#!/usr/bin/env bash
# Where the time of "ls -l of 10 000 entries, cold" goes (docs/PERFORMANCE.md), on an s3rver of its own: each round
# a fresh mount (a new vault) runs `ls -l` of a directory of N objects another client wrote, with the CPU seconds
# s3vault and the server spent; then the same server answers N HEADs from a warm SDK client (32 at once, as many
# as s3vault keeps in flight) and one paginated listing, with the server's CPU seconds for each: what any client
# that shows each object's own metadata pays.
#   bench/ls-cold.sh            3 rounds of 10 000        ROUNDS=1 FILES=2000 bench/ls-cold.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
files=${FILES:-10000}
work=$(mktemp -d /var/tmp/s3vault-ls.XXXXXX)
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
mp="$work/mnt"
cleanup() {
  node bin/s3vault.js unmount "$mp" >/dev/null 2>&1 || fusermount3 -uz "$mp" 2>/dev/null || true
  if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/s3" "$mp"
node --openssl-legacy-provider node_modules/s3rver/bin/s3rver.js -d "$work/s3" -a 127.0.0.1 -p "$port" --no-vhost-buckets \
  --configure-bucket bench >/dev/null 2>&1 &
server=$!
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
echo go | node --no-warnings bench/puts.mjs "http://127.0.0.1:$port" lsdir "$files" >/dev/null
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "cold ls -l of $files objects, a fresh mount each round ($(date -u +%FT%TZ), $(nproc) cores)"
for r in $(seq "$rounds"); do
  node bin/s3vault.js mount bench "$mp" --endpoint "http://127.0.0.1:$port" --vault "$work/vault$r" >/dev/null
  vault=$(pgrep -f "s3vault.js mount bench $mp" | head -1)
  drop
  v0=$(cpu "$vault"); s0=$(cpu "$server"); t0=$(now)
  ls -l "$mp/lsdir" | wc -l >/dev/null
  v1=$(cpu "$vault"); s1=$(cpu "$server"); t1=$(now)
  echo "  ls -l $(sub "$t1" "$t0") s   CPU: s3vault $(sub "$v1" "$v0") s, server $(sub "$s1" "$s0") s"
  node bin/s3vault.js unmount "$mp" >/dev/null
done

# The same server, a warm SDK client in a process of its own: N HEADs 32 at once, then the paginated listing, each
# after the page cache is dropped, as before the mount's `ls -l` (the server then reads each object's files again).
echo "the server alone: $files HEADs from the SDK, then one paginated listing"
for r in $(seq "$rounds"); do
  coproc H {
    node --no-warnings --input-type=module -e "
      import { HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
      import PQueue from 'p-queue';
      const c = new S3Client({ endpoint: 'http://127.0.0.1:$port', region: 'us-east-1', forcePathStyle: true });
      await c.send(new HeadObjectCommand({ Bucket: 'bench', Key: 'lsdir/f0' }));
      const step = async (fn) => { console.log('ready'); await new Promise((r) => process.stdin.once('data', r)); const t = performance.now(); await fn(); console.log(((performance.now() - t) / 1000).toFixed(2)); };
      await step(async () => { const q = new PQueue({ concurrency: 32 }); for (let j = 0; j < $files; j++) q.add(() => c.send(new HeadObjectCommand({ Bucket: 'bench', Key: 'lsdir/f' + j }))); await q.onIdle(); });
      await step(async () => { let token; do { const p = await c.send(new ListObjectsV2Command({ Bucket: 'bench', Prefix: 'lsdir/', ContinuationToken: token })); token = p.NextContinuationToken; } while (token); });
      process.exit(0);"
  }
  hp=$H_PID
  read -r _ <&"${H[0]}"
  drop
  s0=$(cpu "$server"); echo go >&"${H[1]}"; read -r heads <&"${H[0]}"; s1=$(cpu "$server")
  read -r _ <&"${H[0]}"
  drop
  s1=$(cpu "$server"); echo go >&"${H[1]}"; read -r listing <&"${H[0]}"; s2=$(cpu "$server")
  wait "$hp" || true
  echo "  HEADs $heads s (server CPU $(sub "$s1" "$s0") s)   listing $listing s (server CPU $(sub "$s2" "$s1") s)"
done
