# Shared by the bench scripts (sourced): a work directory with an embedded-server mount at $mp, removed on exit.
#   up [s3vault up options…]   mount;   down   unmount;   drop   drop the page cache (when root)
work=$(mktemp -d /var/tmp/s3vault-bench.XXXXXX)
mp="$work/mnt"
cleanup() {
  bin/s3vault.js unmount "$mp" >/dev/null 2>&1 || fusermount3 -uz "$mp" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
up() { bin/s3vault.js up --dir "$work/state" --mountpoint "$mp" "$@" >/dev/null; }
down() { bin/s3vault.js unmount "$mp" >/dev/null; }
