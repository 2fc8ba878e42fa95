"""Lazy package exports (PEP 562): a package names its public objects and the modules that
define them, and each module is imported on first attribute access, not with the package.

Used where importing a package must stay cheap: ``edgeserve.agent`` (the CLI lists models
without ONNX Runtime) and ``edgeserve.agent.sync`` (its config without the MQTT client).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names live in other modules.

    Args:
        package: the package's dotted name, for the error message.
        where: public name -> dotted name of the module that defines it.

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
