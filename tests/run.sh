#!/usr/bin/env bash
# Install what the tests need (Debian's Knot DNS and unbound, the Python test
# dependencies), then run the linters and the test suite. Fails loudly, never
# skips, when a DNS server cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v knotd >/dev/null || need+=(knot)
command -v kdig >/dev/null || need+=(knot-dnsutils)
command -v unbound >/dev/null || need+=(unbound)
command -v dnsperf >/dev/null || need+=(dnsperf); command -v dnsmasq >/dev/null || need+=(dnsmasq-base)  # benchmarks/bench_stub.py
if ((${#need[@]})); then
    echo "installing Debian packages: ${need[*]}"
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
for tool in knotd knotc kdig unbound; do
    command -v "$tool" >/dev/null || { echo "FATAL: $tool is not installed" >&2; exit 1; }
done

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m ruff check src tests benchmarks
python3 -m ruff format --check src tests benchmarks
python3 -m mypy
python3 -m pytest "$@"
