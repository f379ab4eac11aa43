"""bench/label_efficiency.py's summary arithmetic, as pure functions (the bench itself is too slow for tests)."""

import pytest

from bench import label_efficiency


def test_labels_to_reach_interpolates_between_the_rounds_around_the_first_crossing():
    labels, rates = [0, 100, 200, 300], [0.5, 0.6, 0.8, 0.7]
    assert label_efficiency.labels_to_reach(labels, rates, 0.7) == pytest.approx(150.0)  # halfway from 0.6 to 0.8
    assert label_efficiency.labels_to_reach(labels, rates, 0.8) == 200.0
    assert label_efficiency.labels_to_reach(labels, rates, 0.5) == 0.0  # round 0 already there
    assert label_efficiency.labels_to_reach(labels, rates, 0.81) is None  # never reached


def clean_and_noisy(random_final: float, uncertain_final: float, drops: dict[str, float]) -> dict:
    runs = {
        "random/clean": {"win_rates": [0.5, 0.6, random_final], "labels_used": [0, 150, 300]},
        "uncertainty/clean": {"win_rates": [0.5, 0.75, uncertain_final], "labels_used": [0, 150, 300]},
    }
    for selection in ("random", "uncertainty"):
        final = runs[f"{selection}/clean"]["win_rates"][-1]
        for aggregation, drop in drops.items():
            runs[f"{selection}/noisy/{aggregation}"] = {"win_rates": [0.5, 0.5, final - drop], "labels_used": [0, 150, 300]}
    return runs


def test_summary_ratio_and_noisy_drops():
    summary = label_efficiency.summarize(clean_and_noisy(0.7, 0.8, {"majority": 0.1, "reliability": 0.02}))
    # Uncertainty reaches random's final 0.7 at 0.5 -> 0.75 over 0 -> 150 labels: 120 labels, of random's 300.
    assert summary["labels_ratio_uncertainty_vs_random"] == pytest.approx(0.4)
    assert summary["noisy_drop_majority"] == pytest.approx(0.1)
    assert summary["noisy_drop_reliability"] == pytest.approx(0.02)
    assert set(summary["noisy_drop_by_selection"]) == {"random", "uncertainty"}


def test_summary_ratio_is_null_when_uncertainty_never_reaches_random_or_random_never_improved():
    summary = label_efficiency.summarize(clean_and_noisy(0.9, 0.8, {"majority": 0.0, "reliability": 0.0}))
    assert summary["labels_ratio_uncertainty_vs_random"] is None
    # Random ended at its round 0's 0.5: there is no target, not a ratio of 0.
    summary = label_efficiency.summarize(clean_and_noisy(0.5, 0.8, {"majority": 0.0, "reliability": 0.0}))
    assert summary["labels_ratio_uncertainty_vs_random"] is None
