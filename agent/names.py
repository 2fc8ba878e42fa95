"""What a model name, a version and a label may be, checked before any lookup.

Request paths are untrusted text: a name is checked here before the agent looks it up and long
before the store builds a path from it, so a 300-byte name is a 400, never an ``OSError`` (the
``File name too long`` of a filesystem) turned into a 500. The model-name rule is the manifest's
(``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters), so every installable name passes and
nothing else does; versions are decimal ASCII (``"١"`` and ``"²"`` are digits to
:meth:`str.isdigit`, not to us); labels are short words that are not numbers.
"""

from __future__ import annotations

import re
from typing import Final

from edgeserve.errors import EdgeServeError

__all__ = [
    "MAX_LABEL_CHARS",
    "MAX_VERSION_DIGITS",
    "MODEL_NAME_PATTERN",
    "VERSION_PATTERN",
    "InvalidNameError",
    "check_label",
    "check_model_name",
    "check_version",
    "is_label",
    "is_model_name",
]

MAX_VERSION_DIGITS: Final = 18  # decimal digits; every positive int64 up to 10**18 - 1
MAX_LABEL_CHARS: Final = 64  # characters
# The same rules as regular expressions, for the OpenAPI document's path parameters.
MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VERSION_PATTERN: Final = (
    rf"^(?:[0-9]{{1,{MAX_VERSION_DIGITS}}}|[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*)$"
)
_MODEL_RE: Final = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE: Final = re.compile(rf"^[0-9]{{1,{MAX_VERSION_DIGITS}}}$")
_LABEL_RE: Final = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_LABEL_CHARS}}}$")
_SHOWN_CHARS: Final = 40  # of a rejected name, in the error message


class InvalidNameError(EdgeServeError):
    """A model name, version or label in a request is not one that could exist (HTTP 400)."""

    http_status = 400


def is_model_name(text: str) -> bool:
    """True when ``text`` is a valid model name (the manifest's rule)."""
    return _MODEL_RE.fullmatch(text) is not None


def is_label(text: str) -> bool:
    """True when ``text`` is a valid label: letters, digits, ``-``, ``_``; not all digits."""
    return _LABEL_RE.fullmatch(text) is not None and not text.isdigit()


def check_model_name(text: str) -> str:
    """Return ``text`` when it is a valid model name.

    Raises:
        InvalidNameError: it is not.
    """
    if not is_model_name(text):
        raise InvalidNameError(
            f"invalid model name {_shown(text)}: 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return text


def check_version(text: str) -> str:
    """Return ``text`` when it is a version number or a label.

    Raises:
        InvalidNameError: it is neither.
    """
    if _VERSION_RE.fullmatch(text) is None and not is_label(text):
        raise InvalidNameError(
            f"invalid version {_shown(text)}: a number of at most {MAX_VERSION_DIGITS} digits "
            f"or a label of at most {MAX_LABEL_CHARS} letters, digits, '-' or '_'"
        )
    return text


def check_label(text: str) -> str:
    """Return ``text`` when it is a valid label.

    Raises:
        InvalidNameError: it is not.
    """
    if not is_label(text):
        raise InvalidNameError(
            f"bad label {_shown(text)}: at most {MAX_LABEL_CHARS} letters, digits, '-' or '_', "
            "not a number"
        )
    return text


def _shown(text: str) -> str:
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"
