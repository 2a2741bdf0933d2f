#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, bpffs, a virtualenv, the package.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

apt_packages=(python3 python3-venv python3-dev gcc clang llvm libbpf-dev bpftool iproute2 iputils-ping openssl
              keepalived nftables curl wrk ethtool procps kmod)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs for pinning (the kernel mounts it on most distributions, containers often do not).
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "setup: could not mount bpffs on /sys/fs/bpf" >&2
fi

venv="$top/.venv"
# Prefer the system interpreter that python3-venv belongs to; any python3 >= 3.11 works.
py=python3
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
stamp="$venv/.dsrlb-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "${DSRLB_REINSTALL:-}" ]; then
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -e ".[dev]" >"$venv/install.log" 2>&1 || { cat "$venv/install.log" >&2; exit 1; }
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
