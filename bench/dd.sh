#!/usr/bin/env bash
# Sequential throughput with dd, in one run: local disk (the filesystem the vault lives on) against an s3vault
# mount of the embedded S3 server. Write: until dd's fsync + close return (durable in the vault), then until the
# object is in S3 (`s3vault flush --wait`); warm read = blocks in the vault, page cache dropped; cold read =
# fresh vault, every block from S3.
#   bench/dd.sh            1 GiB        SIZE_MB=256 bench/dd.sh   smaller
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-1024}
source bench/common.sh
# dd prints "… copied, 2.77 s, 387 MB/s": keep seconds and rate.
measure() { local label=$1; shift; local out; out=$(timeout 900 dd "$@" 2>&1 | tail -n 1); printf '%-28s %s\n' "$label" "$(sed -E 's/.*copied, //' <<<"$out")"; }
# The vault holds the whole file (a smaller limit would evict it and make "warm" reads cold).
cache="$((size_mb * 2))M"

echo "sequential ${size_mb} MiB, bs=1M ($(date -u +%FT%TZ), $(nproc) cores)"
measure "local disk write+fsync" if=/dev/zero of="$work/local" bs=1M count="$size_mb" conv=fsync
drop
measure "local disk read (cold)" if="$work/local" of=/dev/null bs=1M
rm -f "$work/local"

up --cache-size "$cache"
start=$(date +%s.%N)
measure "s3vault write+fsync+close" if=/dev/zero of="$mp/f" bs=1M count="$size_mb" conv=fsync
bin/s3vault.js flush --wait "$mp" >/dev/null
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v mb="$size_mb" 'BEGIN { t = e - s; printf "%-28s %.2f s, %.1f MB/s\n", "s3vault write until in S3", t, mb * 1.048576 / t }'
drop
measure "s3vault read (warm vault)" if="$mp/f" of=/dev/null bs=1M
bin/s3vault.js unmount "$mp" >/dev/null
rm -rf "$work/state/vault"
up --cache-size "$cache"
drop
measure "s3vault read (cold, from S3)" if="$mp/f" of=/dev/null bs=1M
