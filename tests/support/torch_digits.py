"""The digits MLP (:mod:`support.converter`) as PyTorch: a self-contained factory module on
disk (for ``--torch``, also in another venv's process) and a ``torch.export`` ``.pt2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["digits_factory_module", "digits_pt2"]

_FACTORY = '''\
"""Factory for `edgeserve convert --torch {module}:make` (weights beside this file)."""
from pathlib import Path

import numpy as np
import torch


class DigitsNet(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.fcs = torch.nn.ModuleList()
        for w, b in layers:
            fc = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                fc.bias.copy_(torch.from_numpy(b))
            self.fcs.append(fc)

    def forward(self, pixels):
        x = pixels
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = torch.relu(x)
        return torch.softmax(x, dim=-1)


def make():
    with np.load(Path(__file__).with_name("{module}_weights.npz")) as data:
        n = len(data.files) // 2
        return DigitsNet([(data[f"w{{i}}"], data[f"b{{i}}"]) for i in range(n)]).eval()
'''


def digits_factory_module(directory: Path, weights: object, module: str = "digits_net") -> str:
    """Write ``<module>.py`` with a ``make()`` factory and its weights; returns the spec."""
    layers = weights.layers  # type: ignore[attr-defined]
    arrays = {f"w{i}": w for i, (w, _) in enumerate(layers)}
    arrays |= {f"b{i}": b for i, (_, b) in enumerate(layers)}
    np.savez(directory / f"{module}_weights.npz", **arrays)
    (directory / f"{module}.py").write_text(_FACTORY.format(module=module))
    return f"{module}:make"


def digits_pt2(path: Path, weights: object) -> Path:
    """Export the MLP with ``torch.export`` (batch dimension dynamic) and save it."""
    import torch

    digits_factory_module(path.parent, weights, "digits_pt2_net")
    spec = importlib.util.spec_from_file_location(
        "digits_pt2_net", path.parent / "digits_pt2_net.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.make()
    example = (torch.zeros(4, weights.layers[0][0].shape[0]),)  # type: ignore[attr-defined]
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path
