"""The bundle manifest: what a model is, how it was made and which files make it up.

``manifest.json`` fields:

- ``name``: model name, ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters;
- ``version``: positive integer, monotonic per name;
- ``format``: ``onnx`` | ``ort`` | ``tflite``;
- ``precision``: e.g. ``fp32``, ``fp16``, ``int8``, ``dynamic``;
- ``target``: the converter target preset that produced it (free text for hand-made bundles);
- ``providers``: ordered execution providers the runtime should try (ONNX Runtime names);
- ``inputs`` / ``outputs``: ``{"name", "datatype" (OIP), "shape" (-1 for a dynamic dim)}``;
- ``files``: ``{"path", "sha256", "size", "role"}``; exactly one file has role ``model``
  (others: ``sample`` inputs for health checks, ``labels``, ``other``). The ``sample`` file's
  format (inputs and recorded reference outputs) is :mod:`edgeserve.bundle.sample`;
- ``source``: what it was made from (``sha256``, ``format``, ``filename``);
- ``converter``: ``{"version", "options"}``;
- ``validation``: metrics measured at conversion (free-form mapping); the converter adds
  ``health_check: {"tolerance": t}`` when it stored reference outputs (see
  :mod:`edgeserve.bundle.sample`);
- ``created``: ISO 8601 UTC timestamp.

Parsing is strict: unknown top-level keys, wrong types and out-of-range values raise
:class:`~edgeserve.errors.BundleError`, because a device must not guess at what it runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from edgeserve.datatypes import DATATYPES
from edgeserve.errors import BundleError

__all__ = [
    "FORMATS",
    "MANIFEST_MAX_BYTES",
    "SAMPLE_ROLE",
    "FileEntry",
    "Manifest",
    "TensorSpec",
    "canonical_json",
    "canonical_members",
    "utc_now",
]

MANIFEST_MAX_BYTES: Final = 1_048_576  # bytes; a manifest is a few KiB, this bounds a hostile one
FORMATS: Final = ("onnx", "ort", "tflite")
FILE_ROLES: Final = ("model", "sample", "labels", "other")
#: the sample file's role (its layout: :mod:`edgeserve.bundle.sample`)
SAMPLE_ROLE: Final = "sample"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_MAX_FILES: Final = 64
_MAX_TENSORS: Final = 256
_MAX_RANK: Final = 16


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string with second precision (``...Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON: sorted keys, no spaces, UTF-8, no NaN.

    Canonical bytes are what signatures cover, so two parties that agree on the value agree
    on the bytes.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_members(members: Mapping[str, bytes]) -> bytes:
    """The canonical JSON of an object whose member values come already encoded (each the
    :func:`canonical_json` of the value), so that a large value shared by many objects is
    encoded once: the same bytes as :func:`canonical_json` of the decoded object."""
    return b"{" + b",".join(canonical_json(k) + b":" + members[k] for k in sorted(members)) + b"}"


def _fail(where: str, why: str) -> BundleError:
    return BundleError(f"manifest: {where}: {why}")


def _expect(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise _fail(where, f"missing {key!r}")
    value = obj[key]
    # bool is an int subclass; never accept it where a number is meant
    if isinstance(value, bool) and kind is not bool:
        raise _fail(where, f"{key!r} must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise _fail(where, f"{key!r} must be {_kind_name(kind)}, not {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as clients see it.

    Attributes:
        name: tensor name in the model.
        datatype: OIP datatype name (``FP32``, ``INT8``, ...).
        shape: dimensions, -1 where the model accepts any size.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 256:
            raise _fail("tensor", f"bad tensor name {self.name!r}")
        if self.datatype not in DATATYPES:
            raise _fail(f"tensor {self.name!r}", f"unknown datatype {self.datatype!r}")
        if len(self.shape) > _MAX_RANK:
            raise _fail(f"tensor {self.name!r}", f"rank {len(self.shape)} over {_MAX_RANK}")
        for dim in self.shape:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < -1:
                raise _fail(f"tensor {self.name!r}", f"bad dimension {dim!r} in shape")

    @property
    def has_batch_dim(self) -> bool:
        """True when the first dimension is dynamic (-1), the convention for a batch axis."""
        return len(self.shape) > 0 and self.shape[0] == -1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, obj: Any) -> TensorSpec:
        """Parse and validate the JSON form.

        Raises:
            BundleError: wrong keys, types or values.
        """
        if not isinstance(obj, Mapping):
            raise _fail("tensor", "must be an object")
        shape = _expect(obj, "shape", list, "tensor")
        return cls(
            name=_expect(obj, "name", str, "tensor"),
            datatype=_expect(obj, "datatype", str, "tensor"),
            shape=tuple(shape),
        )


@dataclass(frozen=True)
class FileEntry:
    """One file of a bundle, with the hash and length every reader checks."""

    path: str
    sha256: str
    size: int
    role: str = "model"

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        if not _SHA256_RE.match(self.sha256):
            raise _fail(f"file {self.path!r}", "sha256 must be 64 lowercase hex digits")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise _fail(f"file {self.path!r}", f"bad size {self.size!r}")
        if self.role not in FILE_ROLES:
            raise _fail(f"file {self.path!r}", f"role must be one of {', '.join(FILE_ROLES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any) -> FileEntry:
        """Parse and validate the JSON form.

        Raises:
            BundleError: wrong keys, types or values.
        """
        if not isinstance(obj, Mapping):
            raise _fail("files", "each entry must be an object")
        return cls(
            path=_expect(obj, "path", str, "files"),
            sha256=_expect(obj, "sha256", str, "files"),
            size=_expect(obj, "size", int, "files"),
            role=_expect(obj, "role", str, "files") if "role" in obj else "model",
        )


def check_relative_path(path: str) -> None:
    """Refuse absolute paths, ``..``, backslashes and empty parts in a bundle file path.

    Raises:
        BundleError: the path could escape the bundle directory.
    """
    parts = path.split("/")
    if (
        not path
        or len(path) > 255
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise _fail("files", f"unsafe path {path!r}")


_KEYS: Final = frozenset(
    {
        "name",
        "version",
        "format",
        "precision",
        "target",
        "providers",
        "inputs",
        "outputs",
        "files",
        "source",
        "converter",
        "validation",
        "created",
    }
)


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated ``manifest.json``. See the module docstring for the fields."""

    name: str
    version: int
    format: str
    precision: str
    target: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: tuple[FileEntry, ...] = ()
    providers: tuple[str, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict)
    converter: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise _fail("name", f"{self.name!r} is not a valid model name")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise _fail("version", f"must be a positive integer, not {self.version!r}")
        if self.format not in FORMATS:
            raise _fail("format", f"must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if not self.inputs or not self.outputs:
            raise _fail("inputs/outputs", "a model needs at least one input and one output")
        if len(self.inputs) > _MAX_TENSORS or len(self.outputs) > _MAX_TENSORS:
            raise _fail("inputs/outputs", f"more than {_MAX_TENSORS} tensors")
        if len(self.files) > _MAX_FILES:
            raise _fail("files", f"more than {_MAX_FILES} files")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise _fail("files", "duplicate path")
        if self.files and sum(f.role == "model" for f in self.files) != 1:
            raise _fail("files", "exactly one file must have role 'model'")
        for key in ("source", "converter", "validation"):
            # JSON has no NaN/Infinity, and a release signature covers canonical JSON: refuse
            # here, where the manifest is made, rather than when it is signed or sent.
            try:
                canonical_json(dict(getattr(self, key)))
            except (TypeError, ValueError) as exc:
                raise _fail(key, f"not representable as JSON ({exc})") from None
        for names, what in ((self.inputs, "inputs"), (self.outputs, "outputs")):
            seen = [t.name for t in names]
            if len(set(seen)) != len(seen):
                raise _fail(what, "duplicate tensor name")

    @property
    def model_file(self) -> FileEntry:
        """The file entry with role ``model``.

        Raises:
            BundleError: the manifest lists no files yet.
        """
        for entry in self.files:
            if entry.role == "model":
                return entry
        raise _fail("files", "no model file")

    def file(self, role: str) -> FileEntry | None:
        """The first file with ``role``, or None."""
        return next((f for f in self.files if f.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, the shape of ``manifest.json``."""
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "precision": self.precision,
            "target": self.target,
            "providers": list(self.providers),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "files": [f.to_dict() for f in self.files],
            "source": dict(self.source),
            "converter": dict(self.converter),
            "validation": dict(self.validation),
            "created": self.created,
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes (what a release signature covers)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        """Parse and validate the JSON form.

        Raises:
            BundleError: unknown or missing keys, wrong types or values.
        """
        if not isinstance(obj, Mapping):
            raise _fail("top level", "must be a JSON object")
        unknown = set(obj) - _KEYS
        if unknown:
            raise _fail("top level", f"unknown keys {sorted(unknown)}")
        where = "top level"
        providers = _expect(obj, "providers", list, where) if "providers" in obj else []
        if not all(isinstance(p, str) for p in providers):
            raise _fail("providers", "must be a list of strings")
        inputs = _expect(obj, "inputs", list, where)
        outputs = _expect(obj, "outputs", list, where)
        files = _expect(obj, "files", list, where) if "files" in obj else []
        optional_maps = {}
        for key in ("source", "converter", "validation"):
            optional_maps[key] = _expect(obj, key, dict, where) if key in obj else {}
        return cls(
            name=_expect(obj, "name", str, where),
            version=_expect(obj, "version", int, where),
            format=_expect(obj, "format", str, where),
            precision=_expect(obj, "precision", str, where),
            target=_expect(obj, "target", str, where),
            providers=tuple(providers),
            inputs=tuple(TensorSpec.from_dict(t) for t in inputs),
            outputs=tuple(TensorSpec.from_dict(t) for t in outputs),
            files=tuple(FileEntry.from_dict(f) for f in files),
            source=optional_maps["source"],
            converter=optional_maps["converter"],
            validation=optional_maps["validation"],
            created=_expect(obj, "created", str, where) if "created" in obj else utc_now(),
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json`` bytes, bounded by :data:`MANIFEST_MAX_BYTES`.

        Raises:
            BundleError: too large, not JSON, or not a valid manifest.
        """
        if len(data) > MANIFEST_MAX_BYTES:
            raise _fail("size", f"{len(data)} bytes is over the {MANIFEST_MAX_BYTES} byte limit")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _fail("json", f"not valid JSON ({exc})") from exc
        return cls.from_dict(obj)
