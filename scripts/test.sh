#!/usr/bin/env bash
# Install (Python packages, and the system packages of scripts/system-deps.sh), check the
# house style (ruff lint + format), then run the whole test suite (CPU, offline, minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
bash scripts/system-deps.sh
python -m ruff check .
python -m ruff format --check .
python -m pytest tests -p no:cacheprovider --durations=15 "$@"
