#!/usr/bin/env bash
# Keras -> tflite-int8 -> served by the agent -> queried with tritonclient.
#   examples/keras-to-tflite/run.sh [WORK_DIR]      (needs: pip install -e ".[all]")
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -ge 1 ]; then WORK="$1"; CLEAN=""; else WORK="$(mktemp -d -t edgeserve-keras-XXXXXX)"; CLEAN="$WORK"; fi
PYTHON="${PYTHON:-python3}"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORK"

echo "== 1. train a Keras CNN on the digits data"
"$PYTHON" "$HERE/train.py" "$WORK"

echo "== 2. convert: full-integer int8 TFLite, calibrated, checked against the Keras model"
edgeserve convert "$WORK/model.keras" --target tflite-int8 --name digits-cnn --version 1 \
  --calibration "$WORK/calibration.npy" --validation "$WORK/validation.npy" \
  --labels "$WORK/labels.npy" --max-accuracy-drop 2 --output "$WORK/bundle" --force
edgeserve bundle inspect "$WORK/bundle"

echo "== 3. install it on the (local) device and serve it"
edgeserve agent install "$WORK/bundle" --state "$WORK/state"
edgeserve agent models --state "$WORK/state"
edgeserve agent run --state "$WORK/state" --port "$PORT" >"$WORK/agent.log" 2>&1 &
AGENT=$!
trap 'kill "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null || true; [ -z "$CLEAN" ] || rm -rf "$CLEAN"' EXIT

echo "== 4. query it with tritonclient (JSON, then the binary tensor extension)"
"$PYTHON" "$HERE/query.py" --url "127.0.0.1:$PORT" --model digits-cnn \
  --data "$WORK/validation.npy" --labels "$WORK/labels.npy"
"$PYTHON" "$HERE/query.py" --url "127.0.0.1:$PORT" --model digits-cnn \
  --data "$WORK/validation.npy" --labels "$WORK/labels.npy" --binary
echo "== done (work dir: $WORK${CLEAN:+, removed on exit})"
