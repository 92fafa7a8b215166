#!/usr/bin/env bash
# Install, then run the whole test suite (CPU, offline, a few minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
python -m pytest tests -p no:cacheprovider "$@"
