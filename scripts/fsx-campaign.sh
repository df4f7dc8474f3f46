#!/usr/bin/env bash
# Run fsx (test/helpers/fsx.c) on an s3vault mount of an s3rver of its own, several seeds at once (one file
# each), then check that S3 holds exactly what each fsx expects (through a mount with a fresh vault).
#   scripts/fsx-campaign.sh "SEEDS" OPS MAXLEN PAUSE_MS [mount options…]
#   scripts/fsx-campaign.sh "1 2 3 4" 1500 4194304 200 --flush-delay 50 --cache-size 6M --no-passthrough
# FSX_FLAGS in the environment go to each fsx (e.g. FSX_FLAGS=-r: renames away and back).
# Prints fsx's result per seed ("ok …", or the failing operation and the ones before it), then one line per seed
# whose object is right. Exit 0 when every seed passed both. A failed run's directory is kept (printed).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n '2,7p' "$0"; exit 2; }
seeds=$1 ops=$2 maxlen=$3 pause=$4
shift 4
work=$(mktemp -d /var/tmp/s3vault-fsx.XXXXXX)
mp="$work/mnt"
mkdir -p "$work/s3" "$mp"
gcc -O2 -o "$work/fsx" test/helpers/fsx.c || exit 2
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
node --openssl-legacy-provider node_modules/s3rver/bin/s3rver.js -d "$work/s3" -a 127.0.0.1 -p "$port" --no-vhost-buckets \
  --configure-bucket fsx >/dev/null 2>&1 &
server=$!
cleanup() {
  node bin/s3vault.js unmount "$mp" --no-wait >/dev/null 2>&1 || fusermount3 -uz "$mp" 2>/dev/null
  kill "$server" 2>/dev/null
}
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
start_mount() { node bin/s3vault.js mount fsx "$mp" --endpoint "http://127.0.0.1:$port" "$@" >/dev/null; }
start_mount --vault "$work/vault" --log-file "$work/log" "$@" || exit 1
mkdir -p "$mp/d"
pids=()
for s in $seeds; do
  # shellcheck disable=SC2086 # FSX_FLAGS: several words
  timeout -k 5 900 "$work/fsx" ${FSX_FLAGS:-} -e "$work/expected$s" "$mp/d/f$s" "$s" "$ops" "$maxlen" "$pause" > "$work/out$s" 2>&1 &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
for s in $seeds; do sed "s/^/seed $s: /" "$work/out$s" | head -n 40; done
timeout 600 node bin/s3vault.js flush --wait "$mp" >/dev/null || failed=1
node bin/s3vault.js unmount "$mp" >/dev/null || failed=1
start_mount --vault "$work/fresh" || exit 1
for s in $seeds; do
  if [ -e "$work/expected$s" ] && timeout 120 cmp -s "$work/expected$s" "$mp/d/f$s"; then echo "seed $s: S3 holds the expected bytes"; else failed=1; fi
done
# Nothing else under the prefix: no object left under a name the file had for a while (fsx -r's FILE.mv).
extra=$(timeout 60 ls "$mp/d" | grep -vxE "$(printf 'f%s|' $seeds | sed 's/|$//')")
[ -z "$extra" ] || { echo "S3 holds other objects: $extra"; failed=1; }
node bin/s3vault.js unmount "$mp" >/dev/null
if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "failed; kept $work (s3vault's log: $work/log)"; fi
exit "$failed"
