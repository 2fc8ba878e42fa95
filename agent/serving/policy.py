"""Which versions of a model to serve, and which A/B arm a request goes to: pure functions.

Kept free of I/O and of the event loop (sans I/O, as h11 does) so the rules are easy to read
and to test; :class:`~edgeserve.agent.serving.core.Agent` feeds them what the store and config say.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from edgeserve.agent.config import ModelConfig, SplitConfig

__all__ = ["choose_arm", "wanted_versions"]


def wanted_versions(
    name: str,
    installed: list[int],
    active: int | None,
    store_labels: Mapping[str, int],
    cfg: ModelConfig,
    splits: Iterable[SplitConfig],
) -> tuple[int | None, set[int]]:
    """The version unversioned requests go to, and every version to keep loaded.

    Args:
        name: the model.
        installed: its installed versions.
        active: the store's active version, if any.
        store_labels: labels kept in the store (config labels override them).
        cfg: the model's config (policy, pinned version, labels).
        splits: every A/B alias; those over this model keep both arms loaded.

    Returns:
        ``(default, versions)``: ``pinned`` serves ``cfg.version``; ``latest`` and ``all``
        serve the active version, or the newest when none was ever activated (Triton's
        ``latest`` policy); ``all`` loads every installed version; labelled versions and A/B
        arms are always loaded.
    """
    if not installed:
        return None, set()
    if cfg.policy == "pinned":
        default = cfg.version if cfg.version in installed else None
    else:
        default = active if active in installed else max(installed)
    want = {default} if default is not None else set()
    if cfg.policy == "all":
        want.update(installed)
    labels = {**store_labels, **cfg.labels}
    want.update(v for v in labels.values() if v in installed)
    for split in splits:
        if split.model == name:
            want.update(v for v in (split.a, split.b) if v in installed)
    return default, want


def choose_arm(alias: str, split: SplitConfig, key: str | None) -> tuple[str, int]:
    """``("a" | "b", version)`` for one request.

    With a request key the choice is a stable hash of (alias, key) in [0, 1) compared with
    ``weight_b``, so a key always lands on the same arm; without one it is random.
    """
    if key:
        import hashlib  # here: an agent without keyed splits never needs it (see file_sha256)

        digest = hashlib.blake2b(f"{alias}\0{key}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64
    else:
        point = random.random()
    return ("b", split.b) if point < split.weight_b else ("a", split.a)
