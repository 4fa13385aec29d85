#!/usr/bin/env bash
# Rebuilds the example objects from their C sources (clang-19, libbpf headers).
set -euo pipefail
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
for src in *.c; do
  "$CLANG" -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$src" -o "${src%.c}.o"
done
