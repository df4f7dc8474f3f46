#!/usr/bin/env bash
# The vault's figures, in one run on the embedded S3 server (issue 4's evidence):
#   sequential read of a SIZE_MB object: cold (fresh vault, every block from S3) and warm (in the vault, page cache dropped);
#   random 4 KiB reads (fio, RUNTIME s) on an uncached file and on a cached (pinned) one;
#   vault disk use against its limit after reading 3x the limit.
#   bench/vault.sh         SIZE_MB=1024 RUNTIME=20 LIMIT_MB=256
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-1024}
runtime=${RUNTIME:-20}
limit_mb=${LIMIT_MB:-256}
source bench/common.sh
fresh_vault() { down; rm -rf "$work/state/vault"; up "$@"; }
dd_rate() { timeout 900 dd if="$1" of=/dev/null bs=1M 2>&1 | tail -n 1 | sed -E 's/.*copied, //'; }
fio_iops() {
  timeout $((runtime + 120)) fio --name=rand --filename="$1" --rw=randread --bs=4k --ioengine=psync --invalidate=1 \
    --runtime="$runtime" --time_based --norandommap --output-format=terse 2>/dev/null | awk -F';' '{print $8 " IOPS, " $7 " KiB/s"}'
}

echo "s3vault vault figures ($(date -u +%FT%TZ), $(nproc) cores, object ${size_mb} MiB)"
up --cache-size "$((size_mb * 2))M"
timeout 900 dd if=/dev/urandom of="$mp/obj" bs=1M count="$size_mb" status=none
fresh_vault --cache-size "$((size_mb * 2))M"
drop
printf '%-40s %s\n' "sequential read, cold (from S3)" "$(dd_rate "$mp/obj")"
drop
printf '%-40s %s\n' "sequential read, warm (vault)" "$(dd_rate "$mp/obj")"

fresh_vault --cache-size "$((size_mb * 2))M"
drop
printf '%-40s %s\n' "random 4 KiB reads, uncached file" "$(fio_iops "$mp/obj")"
bin/s3vault.js pin "$mp/obj" >/dev/null
drop
printf '%-40s %s\n' "random 4 KiB reads, cached file" "$(fio_iops "$mp/obj")"

fresh_vault --cache-size "${limit_mb}M"
reads=$(( (limit_mb * 3 + size_mb - 1) / size_mb ))
for _ in $(seq "$reads"); do drop; dd if="$mp/obj" of=/dev/null bs=1M status=none; done
sleep 1
used=$(du -sm "$work/state/vault/data" | cut -f1)
printf '%-40s %s\n' "vault disk use after reading $((reads * size_mb)) MiB" "${used} MiB (limit ${limit_mb} MiB)"
