"""Simulated annotators label over real HTTP (an in-process server), never through the ORM."""

import pytest
from django.core.management import CommandError, call_command

from labeling import oracles
from labeling.models import Choice, Judgment
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
    assert oracles.shorter("", "same words", "Same  words") == "tie"


def test_oracle_by_dotted_path_and_clear_errors():
    assert oracles.resolve("labeling.oracles:longer") is oracles.longer
    with pytest.raises(ValueError, match="unknown oracle 'nope'"):
        oracles.resolve("nope")
    with pytest.raises(ValueError, match="cannot be loaded"):
        oracles.resolve("labeling.oracles:missing")


@concurrent
def test_simulated_annotators_label_every_pair_by_the_oracle_in_a_b_terms(campaign, capsys):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 6, texts=("short", "a much longer answer"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=3, oracle="shorter")
    judgments = Judgment.objects.all()
    assert judgments.count() == 12
    # Whatever side each pair was shown on, the stored choice names completion a (the shorter one).
    assert set(judgments.values_list("choice", flat=True)) == {Choice.A}
    assert judgments.values("annotator").distinct().count() >= 2
    assert "12 judgments stored" in capsys.readouterr().out


def test_full_noise_flips_every_answer(campaign):
    make_pairs(campaign, 4, texts=("short", "a much longer answer"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter", noise=1.0)
    assert set(Judgment.objects.values_list("choice", flat=True)) == {Choice.B}


def test_oracle_ties_become_a_side_when_the_campaign_forbids_ties(campaign):
    campaign.allow_tie = False
    campaign.save()
    make_pairs(campaign, 5, texts=("same length", "equal size"))
    call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="shorter")
    assert Judgment.objects.count() == 5
    assert not Judgment.objects.filter(choice=Choice.TIE).exists()


def test_unknown_campaign_or_oracle_is_a_clear_error(campaign):
    with pytest.raises(CommandError, match="campaign 'nope' is not open for labeling"):
        call_command("simulate_annotators", campaign="nope", annotators=1, oracle="shorter")
    with pytest.raises(CommandError, match="unknown oracle"):
        call_command("simulate_annotators", campaign=campaign.name, annotators=1, oracle="best")
