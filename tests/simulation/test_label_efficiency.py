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


def test_seeds_are_summarized_by_their_mean_curves():
    one = clean_and_noisy(0.7, 0.8, {"majority": 0.1, "reliability": 0.0})
    other = clean_and_noisy(0.9, 0.6, {"majority": 0.3, "reliability": 0.1})
    for runs, status in ((one, "promoted"), (other, "gated")):
        for run in runs.values():
            run.update(kl=[0.0, 1.0, 2.0], statuses=["initial", status, status])

    runs = label_efficiency.mean_runs([one, other])

    assert runs["random/clean"]["win_rates"] == [0.5, 0.6, 0.8]
    assert runs["uncertainty/clean"]["win_rates_by_seed"] == [[0.5, 0.75, 0.8], [0.5, 0.75, 0.6]]
    assert runs["uncertainty/clean"]["statuses_by_seed"][1] == ["initial", "gated", "gated"]
    assert runs["random/noisy/majority"]["labels_used"] == [0, 150, 300]
    summary = label_efficiency.summarize(runs)
    # The summary is of the mean curves, not of one seed: the first alone has a ratio of 0.4 and no reliability drop.
    assert summary["noisy_drop_reliability"] == pytest.approx(0.05)
    assert summary["labels_ratio_uncertainty_vs_random"] is None  # uncertainty's mean ends at 0.7, under random's 0.8


def test_summary_gives_a_ratio_for_every_selection_besides_random():
    runs = clean_and_noisy(0.7, 0.8, {"majority": 0.1, "reliability": 0.0})
    runs["certainty/clean"] = {"win_rates": [0.5, 0.55, 0.7], "labels_used": [0, 150, 300]}
    for aggregation, drop in (("majority", 0.2), ("reliability", 0.04)):
        runs[f"certainty/noisy/{aggregation}"] = {"win_rates": [0.5, 0.5, 0.7 - drop], "labels_used": [0, 150, 300]}

    summary = label_efficiency.summarize(runs)

    assert summary["labels_ratio_uncertainty_vs_random"] == pytest.approx(0.4)
    assert summary["labels_ratio_certainty_vs_random"] == pytest.approx(1.0)  # reached random's 0.7 at the end only
    assert summary["noisy_drop_majority"] == pytest.approx(0.2) and summary["noisy_drop_reliability"] == pytest.approx(0.04)


def test_every_selection_run_has_a_clean_run_and_both_noisy_ones_clean_first():
    names = [label_efficiency.run_name(*run) for run in label_efficiency.runs_of(["random", "certainty"])]
    assert names == [
        "random/clean",
        "certainty/clean",
        "random/noisy/majority",
        "random/noisy/reliability",
        "certainty/noisy/majority",
        "certainty/noisy/reliability",
    ]
