#!/usr/bin/env bash
# Sequential throughput with dd, in one run: local disk (the filesystem the vault lives on) against an s3vault
# mount of the embedded S3 server. Write = until dd's fsync + close return (close uploads to S3 in this version);
# warm read = blocks in the vault, page cache dropped; cold read = fresh vault, every block from S3.
#   bench/dd.sh            1 GiB        SIZE_MB=256 bench/dd.sh   smaller
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-1024}
work=$(mktemp -d /var/tmp/s3vault-dd.XXXXXX)
mp="$work/mnt"
cleanup() {
  bin/s3vault.js unmount "$mp" >/dev/null 2>&1 || fusermount3 -uz "$mp" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# dd prints "… copied, 2.77 s, 387 MB/s": keep seconds and rate.
measure() { local label=$1; shift; local out; out=$(timeout 900 dd "$@" 2>&1 | tail -n 1); printf '%-28s %s\n' "$label" "$(sed -E 's/.*copied, //' <<<"$out")"; }
up() { bin/s3vault.js up --dir "$work/state" --mountpoint "$mp" >/dev/null; }

echo "sequential ${size_mb} MiB, bs=1M ($(date -u +%FT%TZ), $(nproc) cores)"
measure "local disk write+fsync" if=/dev/zero of="$work/local" bs=1M count="$size_mb" conv=fsync
drop
measure "local disk read (cold)" if="$work/local" of=/dev/null bs=1M
rm -f "$work/local"

up
measure "s3vault write+fsync+close" if=/dev/zero of="$mp/f" bs=1M count="$size_mb" conv=fsync
drop
measure "s3vault read (warm vault)" if="$mp/f" of=/dev/null bs=1M
bin/s3vault.js unmount "$mp" >/dev/null
rm -rf "$work/state/vault"
up
drop
measure "s3vault read (cold, from S3)" if="$mp/f" of=/dev/null bs=1M
