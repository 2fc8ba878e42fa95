"""PyTorch sources: a ``torch.export`` ExportedProgram (``.pt2``) or a module from a factory.

Both become an ExportedProgram: its user inputs name the model's inputs (the ``forward``
parameters), its outputs are ``output_0``, ``output_1``, ... in the order ``forward`` returns
them, and a dimension ``torch.export`` left symbolic is dynamic (``-1``). A module is exported
with every input's first axis ``Dim.AUTO`` (torch.export's "dynamic where the code allows"),
so the batch stays dynamic unless the model fixes it.
"""

from __future__ import annotations

import importlib
import inspect
import io
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeserve.bundle.manifest import TensorSpec
from edgeserve.datatypes import datatype_of
from edgeserve.errors import ConfigError, ModelError

__all__ = ["exported_io", "load_pt2", "load_torch_module", "named_module", "torch_runner"]

TORCH_HELP = (
    "PyTorch sources need torch: pip install torch (CPU wheel) 'edgeserve-toolkit[convert-torch]'"
)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(TORCH_HELP) from None
    return torch


def load_pt2(path: Path) -> tuple[Any, bytes]:
    """Load a ``torch.export.save`` file.

    Returns:
        The ExportedProgram and the file's bytes (hashed as the source).

    Raises:
        ConfigError: torch is missing, or the file is not an ExportedProgram.
    """
    torch = _torch()
    data = path.read_bytes()
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise ConfigError(f"{path}: not a torch.export ExportedProgram ({_first(exc)})") from exc
    return program, data


def load_torch_module(spec: str, example: Path | None) -> tuple[Any, bytes]:
    """Import ``module:factory`` (from ``sys.path``, e.g. the current directory), call the
    factory, and export the module it returns with the example input.

    Args:
        spec: ``module:factory``; ``factory()`` returns a ``torch.nn.Module``.
        example: ``.npy`` (one input) or ``.npz`` keyed by ``forward``'s parameter names.

    Returns:
        The ExportedProgram and its serialized bytes (hashed as the source).

    Raises:
        ConfigError: bad spec, import failure, no example input, a factory that does not
            return a module, or an example that does not fit ``forward``.
        ModelError: ``torch.export`` cannot trace the module.
    """
    torch = _torch()
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"--torch {spec}: expected module:factory")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` would have it
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--torch {spec}: cannot import it ({_first(exc)})") from exc
    if example is None:
        raise ConfigError("--torch needs --example-input (.npy, or .npz keyed by input name)")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"--torch {spec}: returned {type(module).__name__}, not a torch Module")
    module.eval()
    names = [
        p.name
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    data = _read_example(example, names, spec)
    args = tuple(torch.from_numpy(np.ascontiguousarray(data[n])) for n in names)
    dynamic = tuple({0: torch.export.Dim.AUTO} if a.ndim else {} for a in args)
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
    except Exception as exc:
        raise ModelError(f"--torch {spec}: torch.export failed ({_first(exc)})") from exc
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return program, buffer.getvalue()


def _read_example(path: Path, names: list[str], spec: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--example-input {path}: not a .npy/.npz file ({_first(exc)})") from exc
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ConfigError(
                f"--example-input {path}: {spec} takes {len(names)} inputs "
                f"({', '.join(names)}): pass an .npz keyed by those names"
            )
        return {names[0]: loaded}
    missing = [n for n in names if n not in loaded.files]
    if missing:
        raise ConfigError(f"--example-input {path}: no array for input(s) {', '.join(missing)}")
    return {n: loaded[n] for n in names}


def exported_io(program: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs (user inputs, parameters and buffers excluded) and outputs of a program."""
    signature = program.graph_signature
    nodes = {n.name: n for n in program.graph.nodes}

    def spec(name: str, node: Any) -> TensorSpec:
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise ConfigError(f"PyTorch input/output {name!r} is not a tensor")
        dims = tuple(int(d) if isinstance(d, int) else -1 for d in val.shape)
        dtype = np.dtype(str(val.dtype).removeprefix("torch."))
        return TensorSpec(name, datatype_of(dtype), dims)

    inputs = tuple(spec(n, nodes[n]) for n in signature.user_inputs)
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    user = list(out_node.args[0])[-len(signature.user_outputs) :]
    outputs = tuple(spec(f"output_{i}", node) for i, node in enumerate(user))
    return inputs, outputs


def torch_runner(
    program: Any, inputs: tuple[TensorSpec, ...], threads: int
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    """Run the program on named numpy inputs; outputs in ``forward``'s order."""
    torch = _torch()
    if threads:
        torch.set_num_threads(threads)
    module = program.module()

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs]
        with torch.no_grad():
            out = module(*args)
        return [t.detach().numpy() for t in _leaves(out)]

    return run


def named_module(program: Any, names: list[str]) -> Any:
    """A module running ``program`` whose ``forward`` takes the inputs by name.

    An ExportedProgram's module takes its inputs flattened and refuses ``train()``/``eval()``,
    which exporters call: this one is always in eval mode, and converters that name a model's
    inputs after ``forward``'s parameters (litert-torch's signature) see the real names.

    Raises:
        ConfigError: an input name that is not a Python identifier.
    """
    torch = _torch()
    if not all(n.isidentifier() for n in names):
        raise ConfigError(f"PyTorch input names {names} are not Python identifiers")
    args = ", ".join(names)
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {args}):\n    return self.inner({args})\n", namespace)

    def train(self: Any, mode: bool = True) -> Any:
        return self  # always eval: the program was exported in eval mode

    cls = type(
        "NamedProgram", (torch.nn.Module,), {"forward": namespace["forward"], "train": train}
    )
    wrapper = cls()
    wrapper.inner = program.module()
    wrapper.training = False
    return wrapper


def _leaves(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [leaf for item in out for leaf in _leaves(item)]
    if isinstance(out, dict):
        return [leaf for item in out.values() for leaf in _leaves(item)]
    if out is None:
        raise ModelError("the PyTorch model returned None")
    return [out]


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
