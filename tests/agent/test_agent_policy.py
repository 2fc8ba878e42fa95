"""Version policy and A/B arm choice, as pure functions."""

from __future__ import annotations

import pytest
from edgeserve.agent.config import ModelConfig, SplitConfig
from edgeserve.agent.serving.policy import choose_arm, wanted_versions


@pytest.mark.parametrize(
    ("cfg", "active", "expected"),
    [
        (ModelConfig(), 2, (2, {2})),
        (ModelConfig(), None, (3, {3})),  # never activated: the newest, like Triton
        (ModelConfig(policy="all"), 1, (1, {1, 2, 3})),
        (ModelConfig(policy="pinned", version=1), 3, (1, {1})),
        (ModelConfig(policy="pinned", version=9), 3, (None, set())),
        (ModelConfig(labels={"canary": 3}), 1, (1, {1, 3})),
    ],
    ids=["latest", "latest-unactivated", "all", "pinned", "pinned-missing", "labels"],
)
def test_agent_policy_wanted_versions(
    cfg: ModelConfig, active: int | None, expected: tuple[int | None, set[int]]
) -> None:
    assert wanted_versions("m", [1, 2, 3], active, {}, cfg, []) == expected


def test_agent_policy_store_labels_splits_and_empty() -> None:
    split = SplitConfig("m", 1, 2, 0.5)
    other = SplitConfig("n", 7, 8, 0.5)
    assert wanted_versions("m", [1, 2, 3], 3, {"stable": 1}, ModelConfig(), [split, other]) == (
        3,
        {1, 2, 3},
    )
    assert wanted_versions("m", [], 3, {}, ModelConfig(), []) == (None, set())


def test_agent_policy_choose_arm_sticky_and_weighted() -> None:
    split = SplitConfig("m", 1, 2, 0.3)
    picks = [choose_arm("alias", split, f"k{i}") for i in range(2000)]
    assert picks == [choose_arm("alias", split, f"k{i}") for i in range(2000)]
    share = sum(arm == "b" for arm, _ in picks) / len(picks)
    assert 0.26 < share < 0.34
    assert {v for arm, v in picks if arm == "b"} == {2}
    assert choose_arm("alias", SplitConfig("m", 1, 2, 0.0), "k") == ("a", 1)
    assert choose_arm("alias", SplitConfig("m", 1, 2, 1.0), "k") == ("b", 2)
