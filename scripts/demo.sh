#!/usr/bin/env bash
# The offline demo: install, then generate data, build the KB, train M3EL and a
# text-only baseline, evaluate both on the full KB and print the comparison.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
python -m spacy project run all . "$@"
