#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for s3vault, then its npm dependencies, then builds it.
#   scripts/install.sh          runtime: fuse3, libfuse3-3
#   scripts/install.sh --test   also what the tests and the benchmark use: libfuse3-dev + gcc (layout check, C
#                               helpers), python3 and fio (test helpers), attr, rsync, sqlite3, git (real programs), s3fs and rclone (interop, peers),
#                               radosgw ceph-mon ceph-osd (a real S3 with versioning and signatures)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 libfuse3-3 libcurl4)
if [ "${1:-}" = "--test" ]; then packages+=(libfuse3-dev gcc python3 fio attr rsync sqlite3 git s3fs rclone radosgw ceph-mon ceph-osd); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install.sh: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# better-sqlite3 compiles against the Node headers the machine ships (no download).
if [ -d /usr/include/node ]; then export npm_config_nodedir=/usr; fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
