"""The champion rule of `aeflow promote` (aeflow.tracking.promote.decide) on its own."""

from __future__ import annotations

import pytest

from aeflow.tracking.promote import Entry, decide

CHAMPION = Entry("champ", 10.0, "data-a", "native")


@pytest.mark.parametrize(
    ("candidate", "margin", "promoted", "why"),
    [
        (Entry("c", 9.0, "data-a", "native"), 0.5, True, "better by 1, more than the margin 0.5"),
        (Entry("c", 9.6, "data-a", "native"), 0.5, False, "not more than the margin 0.5"),
        (Entry("c", 9.5, "data-a", "native"), 0.5, False, "not more than the margin"),  # equal is not more
        (Entry("c", 11.0, "data-a", "native"), 0.0, False, "better by -1"),
        (
            Entry("c", 1.0, "data-b", "native"),
            0.0,
            False,
            "different test data (data_dvc_md5 data-b vs data-a)",
        ),
        (Entry("c", 1.0, "data-a", "portable"), 0.0, False, "different numerics class (portable vs native)"),
        (Entry("champ", 1.0, "data-a", "native"), 0.0, False, "already the champion"),
    ],
)
def test_a_run_replaces_the_champion_only_on_evidence(candidate, margin, promoted, why):
    decision, reason = decide(candidate, CHAMPION, margin, "minimize")
    assert decision is promoted and why in reason, reason


def test_higher_is_better_for_a_maximized_metric():
    assert decide(Entry("c", 10.6, "data-a", "native"), CHAMPION, 0.5, "maximize")[0]
    assert not decide(Entry("c", 9.0, "data-a", "native"), CHAMPION, 0.0, "maximize")[0]


def test_the_first_model_becomes_the_champion():
    assert decide(Entry("c", 99.0, None, "native"), None, 1.0, "minimize") == (True, "no champion yet")
