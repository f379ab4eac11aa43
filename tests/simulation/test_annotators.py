"""Simulated annotators label over real HTTP (an in-process server), never through the ORM."""

import random

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from labeling import services as labeling_services
from labeling.models import Campaign, Choice, Comparison, Judgment, JudgmentSource
from simulation import annotators, oracles
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db(transaction=True)

# Several annotator threads over HTTP need a database that takes concurrent writers.
concurrent = pytest.mark.postgres


def test_oracles_prefer_by_their_rule():
    assert oracles.shorter("", "one two", "one two three") == "a"
    assert oracles.longer("", "one two", "one two three") == "b"
    assert oracles.positive("", "a happy kind day", "a day") == "a"
    assert oracles.positive("", "a day", "a peaceful, lovely day") == "b"  # real text's pleasant words count too
    assert oracles.no_banned("", "a strange day", "a day") == "b"
    assert oracles.gloomy("", "a cold, loud day", "a happy day") == "a"
    assert oracles.gloomy("", "a happy day", "a bright day") == "tie"
    assert oracles.shorter("", "same words", "Same  words") == "tie"


def test_oracle_by_dotted_path_and_clear_errors():
    assert oracles.resolve("simulation.oracles:longer") is oracles.longer
    with pytest.raises(ValueError, match="unknown oracle 'nope'"):
        oracles.resolve("nope")
    with pytest.raises(ValueError, match="cannot be loaded"):
        oracles.resolve("simulation.oracles:missing")


def test_a_scratch_copy_is_offered_to_its_simulated_annotators_and_to_no_human(campaign, alice, client):
    make_pairs(campaign, 1)
    scratch = labeling_services.campaign_copy_scratch(campaign=campaign)
    make_pairs(scratch, 2)
    annotators.annotators_ensure(campaign=scratch, prefix="sim", count=2, password="simulated-annotator-pass")
    assert not scratch.open_to_everyone
    assert sorted(scratch.members.values_list("username", flat=True)) == ["sim-1", "sim-2"]

    # A human annotator: the home page lists only the human campaign, and the scratch copy's queue refuses them.
    client.force_login(alice)
    home = client.get(reverse("home")).content.decode()
    assert campaign.name in home and "simulation" not in home
    human = APIClient()
    human.force_authenticate(alice)
    assert [c["id"] for c in human.get("/api/labeling/campaigns/").json()] == [campaign.pk]
    assert human.post(f"/api/labeling/campaigns/{scratch.pk}/next/").status_code == 403
    assert human.post(f"/api/labeling/campaigns/{campaign.pk}/next/").status_code == 200
    # The scripts that were made its members are served its pairs.
    script = APIClient()
    script.force_authenticate(User.objects.get(username="sim-1"))
    assert script.post(f"/api/labeling/campaigns/{scratch.pk}/next/").status_code == 200


@concurrent
def test_simulated_annotators_label_every_pair_by_the_oracle_in_a_b_terms(campaign, capsys):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 6, texts=("short", "a much longer answer"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=3, oracle="shorter", in_place=True)
    judgments = Judgment.objects.all()
    assert judgments.count() == 12
    # Whatever side each pair was shown on, the stored choice names completion a (the shorter one).
    assert set(judgments.values_list("choice", flat=True)) == {Choice.A}
    assert judgments.values("annotator").distinct().count() >= 2
    # Scripted annotators are marked users: everything they judged is stored as simulated.
    assert set(judgments.values_list("source", flat=True)) == {JudgmentSource.SIMULATED}
    assert "12 simulated judgments stored" in capsys.readouterr().out


def test_full_noise_flips_every_answer(campaign):
    make_pairs(campaign, 4, texts=("short", "a much longer answer"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter", noise=1.0, in_place=True)
    assert set(Judgment.objects.values_list("choice", flat=True)) == {Choice.B}



@concurrent
def test_the_command_plants_a_noisy_crowd_whose_left_clicker_always_picks_the_left_side(campaign, capsys):
    campaign.annotations_per_pair = 4
    campaign.save()
    make_pairs(campaign, 6, texts=("short", "a much longer answer"))
    call_command(
        "simulate_annotators", campaign=campaign.name, annotators=4, oracle="shorter", noisy_crowd=True, in_place=True
    )
    # noisy_crowd(4): a flipper, the left-clicker, two honest annotators; each judged all 6 pairs.
    by_name = {
        name: list(Judgment.objects.filter(annotator__username=name).values_list("choice", "left_is_a"))
        for name in User.objects.filter(username__startswith=f"sim-{campaign.pk}-").values_list("username", flat=True)
    }
    left_clicker, honest = by_name[f"sim-{campaign.pk}-2"], by_name[f"sim-{campaign.pk}-3"]
    assert len(left_clicker) == 6 and all((choice == Choice.A) == left_is_a for choice, left_is_a in left_clicker)
    assert {choice for choice, _ in honest} == {Choice.A}
    assert "no two annotators share a pair" not in capsys.readouterr().out
    campaign.annotations_per_pair = 1
    campaign.save()
    call_command("simulate_annotators", campaign=campaign.name, annotators=2, oracle="shorter", noisy_crowd=True, in_place=True)
    assert "no two annotators share a pair" in capsys.readouterr().out
    with pytest.raises(CommandError, match="leave --noise out"):
        call_command("simulate_annotators", campaign=campaign.name, oracle="shorter", noise=0.1, noisy_crowd=True)
    with pytest.raises(CommandError, match="at least 2 annotators"):
        call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter", noisy_crowd=True)

def test_a_noisy_crowd_has_a_quarter_of_flippers_and_one_left_clicker_among_honest_annotators():
    crowd = annotators.noisy_crowd(8)
    assert crowd.count(annotators.Behaviour(flip=0.4)) == 2
    assert crowd.count(annotators.Behaviour(always="left")) == 1
    assert crowd.count(annotators.Behaviour()) == 5
    assert annotators.noisy_crowd(4) == [
        annotators.Behaviour(flip=0.4), annotators.Behaviour(always="left"), annotators.Behaviour(), annotators.Behaviour()
    ]
    with pytest.raises(ValueError, match="at least 2 annotators"):
        annotators.noisy_crowd(1)
    with pytest.raises(ValueError, match="always must be left, right or empty"):
        annotators.Behaviour(always="a")


def test_each_behaviour_answers_its_own_way():
    rng = random.Random(0)
    flipper, left_clicker, honest = annotators.Behaviour(flip=0.4), annotators.Behaviour(always="left"), annotators.Behaviour()
    flipped = sum(flipper.answer("right", rng) == "left" for _ in range(2000))
    assert 0.35 < flipped / 2000 < 0.45
    assert flipper.answer("tie", rng) == "tie"  # a tie has no other side
    assert {left_clicker.answer(verdict, rng) for verdict in ("left", "right", "tie")} == {"left"}
    assert {honest.answer("right", rng) for _ in range(50)} == {"right"}


def test_a_judgment_limit_stops_the_annotators_after_the_picked_pairs(campaign):
    pairs = make_pairs(campaign, 5, texts=("short", "a much longer answer"))
    picked = [pairs[3], pairs[4]]
    Comparison.objects.filter(pk__in=[p.pk for p in picked]).update(selection_rank=1, selected_by="uncertainty")
    credentials = annotators.annotators_ensure(campaign=campaign, prefix="sim", count=1, password="simulated-annotator-pass")
    with annotators.serve_in_thread() as url:
        result = annotators.simulate(
            base_url=url, campaign=campaign.name, credentials=credentials, oracle=oracles.shorter, limit=2, progress=False
        )
    assert result.judgments == 2
    assert sorted(Judgment.objects.values_list("comparison_id", flat=True)) == sorted(p.pk for p in picked)


def test_oracle_ties_become_a_side_when_the_campaign_forbids_ties(campaign):
    campaign.allow_tie = False
    campaign.save()
    make_pairs(campaign, 5, texts=("same length", "equal size"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter", in_place=True)
    assert Judgment.objects.count() == 5
    assert not Judgment.objects.filter(choice=Choice.TIE).exists()


def test_unknown_campaign_or_oracle_is_a_clear_error(campaign):
    with pytest.raises(CommandError, match="no campaign named 'nope'"):
        call_command("simulate_annotators", campaign="nope", annotators=1, oracle="shorter")
    campaign.is_active = False
    campaign.save()
    with pytest.raises(CommandError, match="is not open for labeling"):
        call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter", in_place=True)
    with pytest.raises(CommandError, match="unknown oracle"):
        call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="best")


@pytest.mark.slow
def test_by_default_scripts_judge_a_scratch_copy_and_leave_the_human_queue_untouched(
    campaign, alice, tiny_model_path, settings, capsys
):
    settings.POLICY_MODEL = str(tiny_model_path)
    settings.GENERATION_BACKEND = "transformers"  # the vLLM engine is covered by generation's tests
    pairs = make_pairs(campaign, 2, texts=("short", "a much longer answer"))
    alice_judgment = labeling_services.judgment_submit(
        assignment_id=labeling_services.assignment_next(campaign=campaign, annotator=alice).pk,
        annotator=alice,
        choice="left",
    ).judgment

    call_command("simulate_annotators", campaign=campaign.name, annotators=2, oracle="shorter", max_tokens=8)

    scratch = Campaign.objects.exclude(pk=campaign.pk).get()
    assert scratch.name.startswith(f"{campaign.name} · simulation")
    assert sorted(scratch.prompts.values_list("text", flat=True)) == sorted(p.prompt.text for p in pairs)
    # The human campaign: the same pairs, still open for humans, and only alice's judgment.
    assert list(Judgment.objects.filter(comparison__prompt__campaign=campaign)) == [alice_judgment]
    assert alice_judgment.source == JudgmentSource.HUMAN
    simulated = Judgment.objects.filter(comparison__prompt__campaign=scratch)
    assert simulated.count() > 0 and set(simulated.values_list("source", flat=True)) == {JudgmentSource.SIMULATED}
    assert "simulated judgments stored in" in capsys.readouterr().out
