"""Candidate pairs scored with the active policy's implicit reward margin and entropy, then picked for humans."""

import pytest
import torch
from django.core.management import call_command
from django.urls import reverse
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation.models import ModelVersion
from generation.selectors import prompt_model_input
from labeling import services as labeling_services
from labeling import selection
from labeling.models import Comparison, JudgmentSource, PairSelection, Split
from training import evaluation, export, scoring, services, tasks
from training.export import AggregationPolicy
from training.models import RoundStatus, TrainingRound

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained_policy(campaign, tiny_policy, tiny_model_path, tmp_path) -> ModelVersion:
    """A policy that differs from its reference (the tiny model with seeded noise), as a round produced it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(tmp_path / "policy")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "policy")
    version = ModelVersion.objects.create(name="round-1", base_path=str(tmp_path / "policy"), parent=tiny_policy)
    TrainingRound.objects.create(
        campaign=campaign,
        number=1,
        reference_version=tiny_policy,
        start_version=tiny_policy,
        output_version=version,
        config={"beta": 0.2},
        status=RoundStatus.PROMOTED,
    )
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=version.pk)
    campaign.refresh_from_db()
    return version


def candidates(pairs, n: int = 6) -> list[Comparison]:
    return [
        pairs.pair(votes=[], text=f"Tell me about thing {i}.", a=f"Thing {i} is nice.", b="sea " * (i + 1))
        for i in range(n)
    ]


def scored_candidates(campaign, pairs, policy: ModelVersion, mode: str, n: int = 6) -> dict:
    """The campaign set to pick by `mode` with no random share, n candidates, and the policy's scores of them."""
    campaign.pair_selection = mode
    campaign.selection_random_share = 0.0
    campaign.save()
    return scoring.candidate_scores(comparisons=candidates(pairs, n), policy=policy)


def own_logps(policy: ModelVersion, comparison: Comparison) -> tuple[float, float]:
    """log pi(a|x), log pi(b|x) under the policy, by hand from training.evaluation's pieces."""
    tokenizer = AutoTokenizer.from_pretrained(policy.base_path)
    head, (a, b) = evaluation.split_completions(
        tokenizer,
        prompt_model_input(comparison.prompt),
        [
            [{"role": "assistant", "content": comparison.completion_a.text}],
            [{"role": "assistant", "content": comparison.completion_b.text}],
        ],
    )
    model = AutoModelForCausalLM.from_pretrained(policy.base_path, dtype=torch.float32)
    logps = evaluation.sequence_logps(model, [(head, a), (head, b)], pad_token_id=tokenizer.pad_token_id)
    return float(logps[0]), float(logps[1])


def test_scores_are_the_policy_implicit_reward_margins_against_its_round_reference_and_its_entropy(
    campaign, pairs, trained_policy, tiny_policy
):
    comparisons = candidates(pairs)

    scores = scoring.candidate_scores(comparisons=comparisons, policy=trained_policy)
    margins = {pk: score.margin for pk, score in scores.items()}

    tokenizer = AutoTokenizer.from_pretrained(trained_policy.base_path)
    c = comparisons[2]
    head, (a, b) = evaluation.split_completions(
        tokenizer,
        prompt_model_input(c.prompt),
        [[{"role": "assistant", "content": c.completion_a.text}], [{"role": "assistant", "content": c.completion_b.text}]],
    )
    expected = evaluation.PairLogps(([(head, a)], [(head, b)]), pad_token_id=tokenizer.pad_token_id).margins(
        AutoModelForCausalLM.from_pretrained(trained_policy.base_path, dtype=torch.float32),
        AutoModelForCausalLM.from_pretrained(tiny_policy.base_path, dtype=torch.float32),
        beta=0.2,
    )
    assert margins[c.pk] == pytest.approx(float(expected[0]), abs=1e-4)
    assert len({round(m, 6) for m in margins.values()}) == len(comparisons)  # really scored, not all zero
    assert scores[c.pk].entropy == pytest.approx(-sum(own_logps(trained_policy, c)) / 2, abs=1e-3)


def test_a_policy_no_round_produced_scores_every_margin_zero_and_still_tells_its_entropy(campaign, pairs, tiny_policy):
    comparisons = candidates(pairs, 3)

    scores = scoring.candidate_scores(comparisons=comparisons, policy=tiny_policy)

    assert {pk: score.margin for pk, score in scores.items()} == {c.pk: 0.0 for c in comparisons}
    for c in comparisons:
        assert scores[c.pk].entropy == pytest.approx(-sum(own_logps(tiny_policy, c)) / 2, abs=1e-3)
    assert len({round(score.entropy, 3) for score in scores.values()}) == 3


def test_a_first_model_gives_humans_the_prompts_it_is_least_sure_how_to_answer(campaign, pairs, tiny_policy):
    scores = scored_candidates(campaign, pairs, tiny_policy, PairSelection.UNCERTAINTY, 8)

    picks = services.pairs_score_and_select(campaign=campaign, budget=3)

    surest_last = sorted(scores, key=lambda pk: -scores[pk].entropy)
    assert set(picks) == set(surest_last[:3])
    assert set(picks) != set(selection.choose({pk: 0.0 for pk in scores}, budget=3, mode="random", random_share=0.0))
    stored = dict(Comparison.objects.values_list("pk", "policy_entropy"))
    assert stored == pytest.approx({pk: score.entropy for pk, score in scores.items()})


def test_select_pairs_command_gives_humans_the_least_sure_pairs_first_and_the_export_carries_the_margin(
    campaign, pairs, trained_policy
):
    scores = scored_candidates(campaign, pairs, trained_policy, PairSelection.UNCERTAINTY)
    margins = {pk: score.margin for pk, score in scores.items()}

    call_command("select_pairs", campaign=campaign.name, budget=2)

    least_sure = sorted(margins, key=lambda pk: abs(margins[pk]))[:2]
    picked = Comparison.objects.filter(selection_rank__gt=0).order_by("-selection_rank")
    assert list(picked.values_list("pk", flat=True)) == least_sure  # the least sure is served first
    # The batch is full until humans finish some of it (a redelivered task picks nothing); then it is
    # topped up with the next least sure pairs.
    assert services.pairs_score_and_select(campaign=campaign, budget=2) == {}
    Comparison.objects.filter(pk=least_sure[0]).update(status="complete")
    assert tasks.pairs_select.apply(args=[campaign.pk, 2]).get() == 1
    batch = Comparison.objects.filter(selection_rank__gt=0, status="open").order_by("-selection_rank")
    # The top-up's pick, scored by the newest policy, is served before what is left of the earlier batch.
    next_least_sure = sorted(margins, key=lambda pk: abs(margins[pk]))[2]
    assert list(batch.values_list("pk", flat=True)) == [next_least_sure, least_sure[1]]
    # Once judged, the row says why the pair was labeled, the margin for its chosen side and the entropy.
    judged = pairs.pair(votes=["b"], text="judged", a="x", b="y")
    labeling_services.pairs_select(campaign=campaign, margins={judged.pk: 0.25}, entropies={judged.pk: 3.5}, budget=1)
    [row] = [
        r
        for r in export.preference_rows(campaign=campaign, split=Split.TRAIN, policy=AggregationPolicy(), conversational=True)
        if r["comparison_id"] == judged.pk
    ]
    assert (row["selected_by"], row["policy_margin"], row["policy_entropy"]) == ("uncertainty", -0.25, 3.5)


def test_certainty_gives_humans_the_pairs_the_policy_is_surest_of_among_the_prompts_it_is_least_sure_how_to_answer(
    campaign, pairs, trained_policy
):
    scores = scored_candidates(campaign, pairs, trained_policy, PairSelection.CERTAINTY, 8)

    picks = services.pairs_score_and_select(campaign=campaign, budget=2)

    unsure_half = sorted(scores, key=lambda pk: -scores[pk].entropy)[:4]
    surest = sorted(unsure_half, key=lambda pk: -abs(scores[pk].margin))[:2]
    assert list(picks.items()) == [(surest[0], "certainty"), (surest[1], "certainty")]  # the surest served first
    stored = dict(Comparison.objects.filter(selection_rank__gt=0).values_list("pk", "selected_by"))
    assert stored == {pk: "certainty" for pk in surest}


def test_the_campaign_admin_action_queues_a_top_up_after_commit(
    client, admin_user, campaign, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(tasks.pairs_select, "delay", lambda campaign_id: queued.append(campaign_id))
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:labeling_campaign_changelist"),
            {"action": "select_pairs", "_selected_action": [campaign.pk]},
            follow=True,
        )

    assert queued == [campaign.pk]
    assert "topped up to 150 pairs" in response.content.decode()


@pytest.mark.parametrize("third_judge", [JudgmentSource.SIMULATED, JudgmentSource.HUMAN])
def test_uncertainty_learns_from_judged_pairs_scored_by_the_same_policy_how_often_their_truth_is_a_side(
    campaign, pairs, trained_policy, third_judge
):
    campaign.pair_selection = PairSelection.UNCERTAINTY
    campaign.selection_random_share = 0.0
    campaign.save()
    texts = [(f"Describe place {i}.", f"Place {i} is " + "warm " * (i % 5), "hill " * (i + 1)) for i in range(16)]
    probes = [pairs.pair(votes=[], text=text, a=a, b=b) for text, a, b in texts]
    probed = scoring.candidate_scores(comparisons=probes, policy=trained_policy)
    Comparison.objects.filter(pk__in=[p.pk for p in probes]).delete()
    margins_of = [probed[p.pk].margin for p in probes]
    entropies_of = [probed[p.pk].entropy for p in probes]
    median = sorted(abs(m) for m in margins_of)[len(texts) // 2]
    # Two humans tie on the pairs the policy is least sure of and pick a side on the others; a third judge
    # always picks the left side. Simulated, it is left out (the policy was trained on human judgments only);
    # human, the campaign's Dawid-Skene fit finds the pairs the other two tie on truly tied all the same.
    sources = [JudgmentSource.HUMAN, JudgmentSource.HUMAN, third_judge]
    for (text, a, b), m in zip(texts, margins_of):
        votes = ["a", "b", "a"] if abs(m) >= median else ["tie", "tie", "a"]
        pairs.pair(votes=votes, sources=sources, text=text, a=a, b=b)
    comparisons = candidates(pairs)
    scores = scoring.candidate_scores(comparisons=comparisons, policy=trained_policy)
    margins = {pk: s.margin for pk, s in scores.items()}
    entropies = {pk: s.entropy for pk, s in scores.items()}

    # Every candidate is picked, so the serving order shows the whole ranking: any pair the curve reorders
    # tells the curves apart (which pairs make the top two depends on the CPU's arithmetic).
    picks = services.pairs_score_and_select(campaign=campaign, budget=len(margins))

    observations = [(m, h, abs(m) >= median) for m, h in zip(margins_of, entropies_of) for _ in range(2)]
    choose = lambda curve: list(  # noqa: E731
        selection.choose(
            margins, budget=len(margins), mode="uncertainty", random_share=0.0, entropies=entropies, decisive=curve
        )
    )
    expected = choose(selection.decisive_curve(observations))
    least_sure = sorted(margins, key=lambda pk: abs(margins[pk]))
    assert expected != least_sure  # the planted ties change the order: this test can tell
    assert list(picks) == expected
    served = Comparison.objects.filter(pk__in=list(margins)).order_by("-selection_rank")
    assert list(served.values_list("pk", flat=True)) == expected
    if third_judge == JudgmentSource.HUMAN:  # read raw, the left-clicker's answers would make ties look decisive
        raw = [(m, h, abs(m) >= median or k == 2) for m, h in zip(margins_of, entropies_of) for k in range(3)]
        assert choose(selection.decisive_curve(raw)) != expected
