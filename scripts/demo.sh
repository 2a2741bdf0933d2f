#!/usr/bin/env bash
# The main job: a namespace lab of seed 001 (single-legged DSR) with live HTTP traffic.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$top/scripts/setup.sh"
cd "$top"
exec dsrlb lab "${1:-dsr}" "${@:2}"
