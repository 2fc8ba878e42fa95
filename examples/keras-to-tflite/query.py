"""Query a running agent with NVIDIA's tritonclient, unmodified (Open Inference Protocol v2).

    python query.py --url 127.0.0.1:8000 --model digits-cnn --data work/validation.npy \
        --labels work/labels.npy [--binary]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import tritonclient.http as httpclient


def wait_ready(
    client: httpclient.InferenceServerClient, url: str, model: str, timeout_s: float
) -> None:
    """Poll the OIP health endpoints until the server and the model are ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready() and client.is_model_ready(model):
                return
        except Exception:  # connection refused while the agent starts
            pass
        time.sleep(0.2)
    sys.exit(f"agent at {url}: model {model} not ready after {timeout_s:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--binary", action="store_true", help="binary tensor extension")
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(url=args.url)
    wait_ready(client, args.url, args.model, 30)
    meta = client.get_model_metadata(args.model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    print(
        f"model {meta['name']} versions {meta.get('versions')}: "
        f"{inp['name']} {inp['datatype']} {inp['shape']} -> {out['name']} {out['shape']}"
    )

    x = np.load(args.data)[: args.rows].astype(np.float32)
    y = np.load(args.labels)[: args.rows]
    tensor = httpclient.InferInput(inp["name"], list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=args.binary)
    wanted = httpclient.InferRequestedOutput(out["name"], binary_data=args.binary)
    result = client.infer(args.model, [tensor], outputs=[wanted])
    predicted = result.as_numpy(out["name"]).argmax(axis=1)
    accuracy = float((predicted == y).mean())
    print(
        f"{len(y)} digits through tritonclient ({'binary' if args.binary else 'JSON'}): "
        f"{accuracy:.1%} correct; first ten predicted {predicted[:10].tolist()}, "
        f"labels {y[:10].tolist()}"
    )
    return 0 if accuracy >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
