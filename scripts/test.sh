#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: system packages (clang-19 for the tests that compile C,
# bpftool, chromium for the dashboard test), the package with its test extras, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v clang-19 >/dev/null || need_apt+=(clang-19 llvm-19)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
command -v bpftool >/dev/null || need_apt+=(bpftool)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "note: not root, so ${need_apt[*]} are not installed; the tests that need them are skipped" >&2
  fi
fi

python3 -m pip install -q -e '.[test]'
exec python3 -m pytest tests -q -p no:cacheprovider "$@"
