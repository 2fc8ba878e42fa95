"""The exception tree, split by whose fault it is.

::

    EdgeServeError                 root; the CLI turns it into one line and an exit code
    ├── ConfigError                a setting or argument is wrong (exit 2)
    │   ├── ConflictError          the request clashes with the current state (HTTP 409)
    │   └── TransitionError        an event a state machine does not take in its state
    ├── BundleError                a bundle is malformed, incomplete or corrupt
    │   └── VerificationError      a signature, hash, version or expiry check failed
    ├── ModelError                 a model file cannot be read, converted or run
    │   └── UnsupportedOpError     an operator the target or runtime cannot take
    ├── ConversionError            a conversion ran but its result is not acceptable
    ├── InferenceInputError        a request's tensors do not fit the model (HTTP 400)
    ├── NotFoundError              an unknown model, version or label (HTTP 404)
    ├── UnavailableError           not ready, overloaded or timed out (HTTP 503)
    │   ├── QueueFullError         a model version's request queue is full
    │   ├── DeadlineExceededError  a request waited or ran past its deadline
    │   ├── ModelUnloadingError    the version is unloading or the agent is shutting down
    │   ├── NotStartedError        the agent is not started (or already stopped)
    │   └── NotReadyError          a known model (version, A/B arm) has nothing loaded
    ├── TransportError             the network, broker or a peer failed
    └── StorageError               the local disk failed (full, read-only, ...)

Lower-level errors are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "ConflictError",
    "ConversionError",
    "DeadlineExceededError",
    "EdgeServeError",
    "InferenceInputError",
    "ModelError",
    "ModelUnloadingError",
    "NotFoundError",
    "NotReadyError",
    "NotStartedError",
    "QueueFullError",
    "StorageError",
    "TransitionError",
    "TransportError",
    "UnavailableError",
    "UnsupportedOpError",
    "VerificationError",
]


class EdgeServeError(Exception):
    """Root of every error edgeserve raises on purpose.

    ``exit_code`` is what the CLI exits with; ``http_status`` what the agent answers with.
    """

    exit_code: int = 1
    http_status: int = 500


class ConfigError(EdgeServeError):
    """A configuration value, file or command-line argument is wrong."""

    exit_code = 2
    http_status = 400


class ConflictError(ConfigError):
    """The request is well formed but clashes with the current state: the name is taken, or
    another rollout or experiment of the model is active."""

    http_status = 409


class TransitionError(ConfigError):
    """A state machine was given an event its current state does not take (e.g. resuming a
    running rollout)."""


class BundleError(EdgeServeError):
    """A bundle is malformed, incomplete, oversized or its files do not match the manifest."""


class VerificationError(BundleError):
    """A trust check failed: signature, threshold, hash, length, version or expiry."""


class ModelError(EdgeServeError):
    """A model file cannot be read, converted or run."""


class UnsupportedOpError(ModelError):
    """An operator that the target or runtime cannot take; the message names it."""


class ConversionError(EdgeServeError):
    """A conversion finished but its result fails a check (accuracy budget, loadability)."""


class InferenceInputError(EdgeServeError):
    """A request's tensors do not fit the model: names, shapes, datatypes or data counts."""

    http_status = 400


class NotFoundError(EdgeServeError):
    """An unknown model, version or label."""

    http_status = 404


class UnavailableError(EdgeServeError):
    """Not ready, overloaded (queue full) or timed out: try again later."""

    http_status = 503


class QueueFullError(UnavailableError):
    """A model version's request queue is full (``max_queue_size`` requests wait)."""


class DeadlineExceededError(UnavailableError):
    """A request waited or ran past its deadline (``timeout_ms`` or the caller's own)."""


class ModelUnloadingError(UnavailableError):
    """The model version is unloading (hot swap, removal) or the agent is shutting down."""


class NotStartedError(UnavailableError):
    """The agent is not started, or already stopped."""


class NotReadyError(UnavailableError):
    """A known model, version or A/B arm has nothing loaded (not loaded yet, or it failed)."""


class TransportError(EdgeServeError):
    """The network, the MQTT broker or an HTTP peer failed."""


class StorageError(EdgeServeError):
    """The local disk failed: full, read-only, or a file vanished."""
