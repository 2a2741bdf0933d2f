#!/usr/bin/env bash
# The whole test suite: set-up, lint, types, unit, XDP and namespace tests.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$top/scripts/setup.sh"
cd "$top"
echo "== ruff"; ruff check src tests bench
echo "== mypy"; mypy
echo "== pytest"; exec pytest "$@"
