"""Third-party noise off by default: ONNX Runtime's native log, its quantizer's Python logging
and warnings. ``edgeserve convert -v`` turns them back on (:func:`set_verbose`)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_third_party", "set_verbose"]

_ORT_ERROR: int = 3  # onnxruntime logger severity: 0 verbose, 1 info, 2 warning, 3 error
_state = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    """Show (True) or hide (False, the default) third-party logs and warnings."""
    _state["verbose"] = verbose
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - the convert extra installs it
        return
    ort.set_default_logger_severity(1 if verbose else _ORT_ERROR)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Inside: ORT's quantizer logs (it logs to the root logger) and Python warnings are
    dropped unless verbose. Our own errors still propagate as exceptions."""
    if _state["verbose"]:
        yield
        return
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous)
