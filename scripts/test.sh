#!/usr/bin/env bash
# Install, check the house style (ruff lint + format), then run the whole test suite
# (CPU, offline, a few minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
python -m ruff check .
python -m ruff format --check .
python -m pytest tests -p no:cacheprovider "$@"
