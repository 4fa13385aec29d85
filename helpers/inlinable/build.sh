#!/usr/bin/env bash
# Rebuilds kfuncs.o, the BPF library of inlinable kfuncs, from helpers/native/inlinable_kfuncs.c (the same
# source the native library compiles for the host). -mcpu=v3 as the RFC compiles its inlinable kfuncs.
set -euo pipefail
cd "$(dirname "$0")"
"${CLANG:-clang-19}" -O2 -g -target bpf -mcpu=v3 -ffreestanding -I../native -c ../native/inlinable_kfuncs.c -o kfuncs.o
