#!/usr/bin/env bash
# Where the time of "1000 files of 4 KiB until in S3" goes (docs/PERFORMANCE.md), on an s3rver of its own:
#  1. split: `cp -r` onto the mount, then `s3vault flush --wait`, each timed, with the CPU seconds s3vault and
#     the server spent in each phase (from /proc);
#  2. overlap: the best that uploading during the copy could do — the copy onto the mount while a separate
#     process (costing s3vault nothing) PUTs as many objects, against the same two one after the other.
#   bench/small-files.sh            5 rounds of each        ROUNDS=3 FILES=500 bench/small-files.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
files=${FILES:-1000}
work=$(mktemp -d /var/tmp/s3vault-small.XXXXXX)
mp="$work/mnt"
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
cleanup() {
  node bin/s3vault.js unmount "$mp" >/dev/null 2>&1 || fusermount3 -uz "$mp" 2>/dev/null || true
  if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/s3" "$mp" "$work/src"
for i in $(seq 0 $((files - 1))); do head -c 4096 /dev/urandom > "$work/src/f$i"; done
node --openssl-legacy-provider node_modules/s3rver/bin/s3rver.js -d "$work/s3" -a 127.0.0.1 -p "$port" --no-vhost-buckets \
  --configure-bucket bench >/dev/null 2>&1 &
server=$!
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
# Uploads wait for an explicit flush: the copy alone is timed.
node bin/s3vault.js mount bench "$mp" --endpoint "http://127.0.0.1:$port" --vault "$work/vault" \
  --flush-delay 600000 --flush-max-delay 600000 >/dev/null
vault=$(pgrep -f "s3vault.js mount bench $mp" | head -1)
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
cp -r "$work/src" "$mp/warm" && node bin/s3vault.js flush --wait "$mp" >/dev/null # V8 and connections warm

echo "split: cp -r of $files x 4 KiB, then flush --wait ($(date -u +%FT%TZ), $(nproc) cores)"
for r in $(seq "$rounds"); do
  v0=$(cpu "$vault"); s0=$(cpu "$server"); t0=$(now)
  cp -r "$work/src" "$mp/split$r"
  v1=$(cpu "$vault"); s1=$(cpu "$server"); t1=$(now)
  node bin/s3vault.js flush --wait "$mp" >/dev/null
  v2=$(cpu "$vault"); s2=$(cpu "$server"); t2=$(now)
  echo "  copy $(sub "$t1" "$t0") s (CPU: s3vault $(sub "$v1" "$v0"), server $(sub "$s1" "$s0"))   flush $(sub "$t2" "$t1") s (CPU: s3vault $(sub "$v2" "$v1"), server $(sub "$s2" "$s1"))   total $(sub "$t2" "$t0") s"
done

# The uploader (bench/puts.mjs): a warm SDK client that PUTs when told to ("go" on stdin) and prints its time.
puts() { node --no-warnings bench/puts.mjs "http://127.0.0.1:$port" "$1" "$files"; }

echo "overlap: the copy and $files PUTs by another process, one after the other and at once"
for r in $(seq "$rounds"); do
  coproc P { puts "seq$r"; }
  pp=$P_PID
  read -r _ <&"${P[0]}"
  t0=$(now); cp -r "$work/src" "$mp/seq$r"; t1=$(now)
  echo go >&"${P[1]}"; read -r seqputs <&"${P[0]}"; wait "$pp" || true; t2=$(now)
  seqline="one after the other: copy $(sub "$t1" "$t0") s + PUTs $seqputs s = $(sub "$t2" "$t0") s"
  coproc P { puts "par$r"; }
  pp=$P_PID
  read -r _ <&"${P[0]}"
  t0=$(now); echo go >&"${P[1]}"; cp -r "$work/src" "$mp/par$r"; t1=$(now)
  read -r parputs <&"${P[0]}"; wait "$pp" || true; t2=$(now)
  echo "  $seqline   at once: copy $(sub "$t1" "$t0") s, PUTs $parputs s, both done $(sub "$t2" "$t0") s"
done
