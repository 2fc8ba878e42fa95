"""Train a small PyTorch CNN on scikit-learn's 8x8 digits and save it with torch.export.

    python export.py OUT_DIR

writes OUT_DIR/model.pt2 (an ExportedProgram, dynamic batch dimension; `edgeserve convert`
exports it to ONNX itself), calibration.npy, validation.npy,
labels.npy, and OUT_DIR/inputs/part-*.npy + OUT_DIR/inputs/labels-*.npy: a folder of input
files for the batch job, as a camera or a sensor would leave them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(image).flatten(1)), dim=1)


def export(model: nn.Module, path: Path) -> None:
    """The model as a torch.export ExportedProgram whose batch dimension is dynamic (the
    bundle's input `image` takes any number of rows)."""
    example = (torch.zeros(2, 1, 8, 8),)
    program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))


def main(out: Path) -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _epoch in range(15):
        for i in range(0, len(xt), 64):
            optimizer.zero_grad()
            probs = model(xt[i : i + 64])
            loss = nn.functional.nll_loss(torch.log(probs + 1e-9), yt[i : i + 64])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    out.mkdir(parents=True, exist_ok=True)
    export(model, out / "model.pt2")
    np.save(out / "calibration.npy", x_train[:256])
    np.save(out / "validation.npy", x_test)
    np.save(out / "labels.npy", y_test.astype(np.int64))
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    for n, start in enumerate(range(0, len(x_test), 100)):
        np.save(inputs / f"part-{n:03d}.npy", x_test[start : start + 100])
        np.save(out / f"labels-{n:03d}.npy", y_test[start : start + 100])
    print(
        f"exported {out / 'model.pt2'}: test accuracy {accuracy:.2%}; "
        f"{n + 1} input files in {inputs}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "work"))
