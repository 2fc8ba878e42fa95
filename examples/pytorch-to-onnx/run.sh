#!/usr/bin/env bash
# PyTorch (torch.export) -> onnx-cpu-int8 -> batch job over a folder of inputs.
#   examples/pytorch-to-onnx/run.sh [WORK_DIR]     (needs torch: pip install torch)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import torch" 2>/dev/null || { echo "this example needs PyTorch: pip install torch" >&2; exit 1; }
if [ $# -ge 1 ]; then WORK="$1"; CLEAN=""; else WORK="$(mktemp -d -t edgeserve-torch-XXXXXX)"; CLEAN="$WORK"; fi
mkdir -p "$WORK/outputs"
trap '[ -z "$CLEAN" ] || rm -rf "$CLEAN"' EXIT

echo "== 1. train a small CNN in PyTorch and save it with torch.export (model.pt2)"
"$PYTHON" "$HERE/export.py" "$WORK"

echo "== 2. convert: ONNX (torch.onnx), static int8 QDQ for the CPU, checked against PyTorch"
edgeserve convert "$WORK/model.pt2" --target onnx-cpu-int8 --name digits-torch --version 1 \
  --calibration "$WORK/calibration.npy" --validation "$WORK/validation.npy" \
  --labels "$WORK/labels.npy" --max-accuracy-drop 2 --output "$WORK/bundle" --force

echo "== 3. install it on the (local) device"
edgeserve agent install "$WORK/bundle" --state "$WORK/state"

echo "== 4. batch job over every file in $WORK/inputs (resumable; same runtime as serving)"
for input in "$WORK"/inputs/*.npy; do
  edgeserve agent batch --state "$WORK/state" --model digits-torch --no-progress \
    --input "$input" --output "$WORK/outputs/$(basename "$input")"
done
"$PYTHON" "$HERE/score.py" "$WORK"
echo "== done (work dir: $WORK${CLEAN:+, removed on exit})"
