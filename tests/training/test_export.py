import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from generation.selectors import prompt_model_input
from labeling.models import Judgment, JudgmentRevision, JudgmentSource, Split
from training import export, selectors, services
from training.config import JUDGMENT_SOURCES
from training.export import AggregationPolicy
from training.models import PreferenceSnapshot

pytestmark = pytest.mark.django_db


def rows(campaign, split=Split.TRAIN, prompt_format="auto", **policy) -> list[dict]:
    policy = AggregationPolicy(**policy)
    conversational = export.is_conversational(
        campaign=campaign, split=split, policy=policy, prompt_format=prompt_format
    )
    return list(export.preference_rows(campaign=campaign, split=split, policy=policy, conversational=conversational))


def test_majority_choice_becomes_chosen_with_provenance(campaign, pairs):
    comparison = pairs.pair(votes=["b", "b", "a"], a="long answer", b="short", strengths=[2, 3, 1])

    [row] = rows(campaign)

    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Tell me about the sea.", "short", "long answer")
    assert row["comparison_id"] == comparison.pk
    assert row["chosen_completion_id"] == comparison.completion_b_id
    assert row["rejected_completion_id"] == comparison.completion_a_id
    assert row["chosen_model_version"] == row["rejected_model_version"] == "tiny-base"
    assert row["judgment_count"] == 3
    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert row["strength"] == 2.5  # mean strength of the winning votes only


def test_rows_carry_the_reliability_posterior_of_their_chosen_completion(campaign, pairs):
    # Three annotators who agree with each other on most pairs; the last pair splits them 2-1.
    for i in range(8):
        pairs.pair(votes=["a", "a", "a"], text=f"agreed {i}")
    split = pairs.pair(votes=["b", "b", "a"], text="split")
    unanimous_b = pairs.pair(votes=["b", "b", "b"], text="unanimous b")

    by_id = {row["comparison_id"]: row for row in rows(campaign)}

    assert by_id[unanimous_b.pk]["posterior"] > 0.9
    assert 0.5 < by_id[split.pk]["posterior"] < by_id[unanimous_b.pk]["posterior"]
    assert all(0 <= row["posterior"] <= 1 for row in by_id.values())


def outvoted_pair(pairs):
    """Twelve pairs where "a" is better, judged by four annotators: judge 0 and judge 3 answer it every time,
    judge 1 (shown b on the left) always clicks left, judge 2 answers b one time in three. Then a pair the
    two unreliable ones outvote judge 0 on, 2 to 1."""
    for i in range(12):
        pairs.pair(votes=["a", "b", "b" if i % 3 == 0 else "a", "a"], text=f"agreed {i}")
    return pairs.pair(votes=["a", "b", "b"], text="outvoted")


def test_by_votes_the_outvoted_pair_chooses_the_majority_with_a_low_posterior(campaign, pairs):
    outvoted = outvoted_pair(pairs)

    by_id = {row["comparison_id"]: row for row in rows(campaign)}

    assert by_id[outvoted.pk]["chosen_completion_id"] == outvoted.completion_b_id
    assert by_id[outvoted.pk]["posterior"] < 0.5


def test_by_posterior_the_outvoted_pair_chooses_the_side_the_reliable_annotator_picked(campaign, pairs):
    outvoted = outvoted_pair(pairs)

    by_votes = {row["comparison_id"]: row for row in rows(campaign)}
    by_posterior = {row["comparison_id"]: row for row in rows(campaign, winner="posterior")}

    row = by_posterior[outvoted.pk]
    assert (row["chosen_completion_id"], row["rejected_completion_id"]) == (outvoted.completion_a_id, outvoted.completion_b_id)
    assert row["posterior"] > 0.5 and row["posterior"] == pytest.approx(1 - by_votes[outvoted.pk]["posterior"], abs=0.05)
    assert row["agreement"] == pytest.approx(1 / 3, abs=1e-6)  # the votes the chosen side got, as ever
    assert (row["votes_a"], row["votes_b"]) == (1, 2)
    # Every other pair's votes and posterior already agree: only the outvoted pair turns.
    assert {k: v["chosen_completion_id"] for k, v in by_posterior.items() if k != outvoted.pk} == {
        k: v["chosen_completion_id"] for k, v in by_votes.items() if k != outvoted.pk
    }


def test_an_unknown_winner_is_refused():
    with pytest.raises(ValueError, match="winner must be one of votes, posterior"):
        AggregationPolicy.from_dict({"winner": "loudest"})


@pytest.mark.parametrize(
    ("votes", "policy", "kept"),
    [
        (["a", "b"], {}, False),  # no majority
        (["a", "a", "b"], {"min_agreement": 0.75}, False),
        (["a", "a", "a", "b"], {"min_agreement": 0.75}, True),
        (["a"], {"min_judgments": 2}, False),
        (["tie", "tie", "a"], {}, False),
        (["tie", "a"], {}, False),  # a tie vote blocks the majority by default
        (["tie", "a"], {"drop_ties": False}, True),  # ...and abstains when ties are kept
        (["both_bad"], {}, False),
        (["both_bad", "b"], {"drop_both_bad": False}, True),
        (["a", "a", "tie"], {}, True),
    ],
)
def test_aggregation_policy_decides_which_pairs_become_rows(campaign, pairs, votes, policy, kept):
    pairs.pair(votes=votes)

    assert len(rows(campaign, **policy)) == int(kept)


def test_a_pair_is_exported_only_once_it_has_all_of_its_campaigns_judgments(campaign, pairs):
    campaign.annotations_per_pair = 3
    campaign.save()
    pending = pairs.pair(votes=["a", "a"], text="two of three")
    settled = pairs.pair(votes=["b", "a", "b"], text="three of three")

    [row] = rows(campaign)
    unsettled = rows(campaign, settled_only=False)

    assert row["comparison_id"] == settled.pk
    assert (row["votes_a"], row["votes_b"], row["votes_tie"], row["votes_both_bad"]) == (1, 2, 0, 0)
    assert row["judgment_count"] == 3 and row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert [r["comparison_id"] for r in unsettled] == [pending.pk, settled.pk]


def test_simulated_judgments_neither_vote_nor_settle_a_human_export_unless_asked(campaign, pairs):
    campaign.annotations_per_pair = 2
    campaign.save()
    mixed = pairs.pair(votes=["a", "b", "b"], sources=["human", "simulated", "simulated"])
    simulated = pairs.pair(votes=["b", "b"], sources=["simulated", "simulated"], text="all simulated")

    assert rows(campaign) == []  # one human vote of two: not settled among humans
    [row] = rows(campaign, settled_only=False)
    assert (row["comparison_id"], row["votes_a"], row["votes_b"]) == (mixed.pk, 1, 0)
    both = rows(campaign, sources=("human", "simulated"))
    assert [(r["comparison_id"], r["votes_b"]) for r in both] == [(mixed.pk, 2), (simulated.pk, 2)]


def test_training_config_spells_out_exactly_labelings_judgment_sources():
    assert set(JUDGMENT_SOURCES) == set(JudgmentSource.values) and len(JUDGMENT_SOURCES) == len(JudgmentSource.values)


def test_a_human_answer_inside_its_undo_window_does_not_settle_its_pair(campaign, pairs, settings):
    settings.LABELING_UNDO_WINDOW_S = 10
    fresh = pairs.pair(votes=["a"], text="just answered", answered_ago=timedelta(seconds=2))
    old = pairs.pair(votes=["b"], text="answered a minute ago", answered_ago=timedelta(minutes=1))

    assert [r["comparison_id"] for r in rows(campaign)] == [old.pk]
    assert [r["comparison_id"] for r in rows(campaign, settled_only=False)] == [fresh.pk, old.pk]
    settings.LABELING_UNDO_WINDOW_S = 1
    assert [r["comparison_id"] for r in rows(campaign)] == [fresh.pk, old.pk]


def test_an_export_and_its_evidence_count_the_undo_window_at_the_instant_they_are_given(campaign, pairs, settings, tmp_path):
    # A round exports both splits and then counts its evidence: an answer's window may close in between,
    # and the round page said 15 settled "at export" when the round trained on 14. One `as_of` for all.
    settings.LABELING_UNDO_WINDOW_S = 10
    answered = pairs.pair(votes=["a"], text="answered 20 s ago", answered_ago=timedelta(seconds=20))
    policy = AggregationPolicy()
    answered_at = Judgment.objects.get(comparison=answered).created_at
    in_window = answered_at + timedelta(seconds=5)

    snapshot = services.snapshot_create(campaign=campaign, policy=policy, path=tmp_path / "a.jsonl", as_of=in_window)
    evidence = selectors.round_evidence(campaign=campaign, policy=policy, min_heldout_pairs=1, as_of=in_window)

    # Counted at `in_window`, not when the queries ran (the window has closed since): still undoable then.
    assert snapshot.row_count == evidence[Split.TRAIN]["settled"] == 0
    assert evidence[Split.TRAIN]["unsettled"] == 1
    after_window = answered_at + timedelta(seconds=11)
    assert export.preferences_count(campaign=campaign, split=Split.TRAIN, policy=policy, as_of=after_window) == 1


def test_a_reopened_or_recently_revised_judgment_does_not_settle_its_pair(campaign, pairs, settings):
    settings.LABELING_UNDO_WINDOW_S = 10
    reopened = pairs.pair(votes=["a"], text="reopened", sources=["simulated"])
    revised = pairs.pair(votes=["b"], text="revised just now")
    Judgment.objects.filter(comparison=reopened).update(reopened_until=timezone.now() + timedelta(minutes=5))
    judgment = Judgment.objects.get(comparison=revised)
    JudgmentRevision.objects.create(
        judgment=judgment, choice="a", answered_at=judgment.created_at, revised_at=timezone.now()
    )

    assert rows(campaign, sources=("human", "simulated")) == []
    Judgment.objects.filter(comparison=reopened).update(reopened_until=timezone.now() - timedelta(seconds=1))
    assert [r["comparison_id"] for r in rows(campaign, sources=("human", "simulated"))] == [reopened.pk]


def test_aggregation_policy_rejects_an_unknown_source():
    with pytest.raises(ValueError, match="sources"):
        AggregationPolicy.from_dict({"sources": "human,robots"})
    assert AggregationPolicy.from_dict({"sources": "human,imported"}).sources == ("human", "imported")


def test_tie_votes_abstaining_do_not_count_toward_agreement(campaign, pairs):
    pairs.pair(votes=["tie", "a", "a", "b"])

    [row] = rows(campaign, drop_ties=False)

    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert row["judgment_count"] == 4


def test_gold_pairs_are_excluded_unless_asked_for(campaign, pairs):
    pairs.pair(votes=["a"], is_gold=True)

    assert rows(campaign) == []
    assert len(rows(campaign, include_gold=True)) == 1


def test_heldout_pairs_are_kept_apart_from_training_rows(campaign, pairs):
    train = pairs.pair(votes=["a"])
    heldout_prompt = pairs.pair(votes=["a"], split=Split.HELDOUT)
    heldout_completion = pairs.pair(votes=["b"], heldout_completion=True)

    assert [r["comparison_id"] for r in rows(campaign)] == [train.pk]
    assert [r["comparison_id"] for r in rows(campaign, split=Split.HELDOUT)] == [
        heldout_prompt.pk,
        heldout_completion.pk,
    ]


def test_chat_format_gives_every_prompt_as_the_messages_the_generator_conditioned_on(campaign, pairs):
    plain = pairs.pair(votes=["b"], text="A plain prompt.", a="x", b="y")

    [row] = rows(campaign, prompt_format="chat")

    assert row["prompt"] == prompt_model_input(plain.prompt) == [{"role": "user", "content": "A plain prompt."}]
    assert row["chosen"] == [{"role": "assistant", "content": "y"}]
    assert row["rejected"] == [{"role": "assistant", "content": "x"}]


def test_auto_format_mixing_chat_and_plain_prompts_puts_every_row_in_trl_conversational_format(campaign, pairs):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    pairs.pair(votes=["a"], messages=messages, a="Hello.", b="...")
    pairs.pair(votes=["b"], text="A plain prompt.", a="x", b="y")

    chat, plain = rows(campaign, prompt_format="auto")

    assert chat["prompt"] == messages
    assert chat["chosen"] == [{"role": "assistant", "content": "Hello."}]
    assert chat["rejected"] == [{"role": "assistant", "content": "..."}]
    # One schema per file: a plain prompt in a chat snapshot becomes a single user turn.
    assert plain["prompt"] == [{"role": "user", "content": "A plain prompt."}]
    assert plain["chosen"] == [{"role": "assistant", "content": "y"}]


def test_same_data_exported_twice_has_the_same_sha256(campaign, pairs, artifacts):
    for i in range(5):
        pairs.pair(votes=["a", "b", "a"], text=f"prompt {i} ünïcode", a=f"answer {i}", b=f"other {i}")

    first = services.snapshot_create(campaign=campaign)
    second = services.snapshot_create(campaign=campaign)

    assert first.pk != second.pk
    assert first.sha256 == second.sha256
    assert first.row_count == 5
    data = Path(first.jsonl_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == first.sha256


def test_parquet_export_is_byte_identical_across_runs_and_shares_the_content_hash(campaign, pairs, artifacts):
    for i in range(3):
        pairs.pair(votes=["b"], text=f"prompt {i}")

    jsonl = services.snapshot_create(campaign=campaign, fmt="jsonl")
    first = services.snapshot_create(campaign=campaign, fmt="parquet", path=artifacts / "one.parquet")
    second = services.snapshot_create(campaign=campaign, fmt="parquet", path=artifacts / "two.parquet")

    assert Path(first.parquet_path).read_bytes() == Path(second.parquet_path).read_bytes()
    assert first.sha256 == jsonl.sha256


def test_new_judgment_changes_the_sha256(campaign, pairs, artifacts):
    pairs.pair(votes=["a"])
    before = services.snapshot_create(campaign=campaign)
    pairs.pair(votes=["b"], text="another prompt")

    after = services.snapshot_create(campaign=campaign)

    assert after.sha256 != before.sha256
    assert after.row_count == 2


def test_parquet_is_written_in_row_groups(campaign, pairs, artifacts, monkeypatch):
    monkeypatch.setattr(export, "_CHUNK", 2)  # a row group per two rows, to see the streaming without 2000 pairs
    for i in range(5):
        pairs.pair(votes=["a"], text=f"prompt {i}")

    snapshot = services.snapshot_create(campaign=campaign, fmt="parquet")

    meta = pq.ParquetFile(snapshot.parquet_path).metadata
    assert (meta.num_rows, meta.num_row_groups) == (5, 3)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("chat", [False, True])
def test_export_loads_with_datasets(campaign, pairs, artifacts, fmt, chat):
    for i in range(3):
        pairs.pair(votes=["a"], text=f"prompt {i}", a=f"good {i}", b=f"bad {i}")
    pairs.pair(votes=["a", "a"], text="no strength", strengths=[2, 3])
    snapshot = services.snapshot_create(campaign=campaign, fmt=fmt, prompt_format="chat" if chat else "auto")

    dataset = load_dataset(
        "json" if fmt == "jsonl" else "parquet",
        data_files=snapshot.jsonl_path or snapshot.parquet_path,
        split="train",
        cache_dir=str(artifacts / "hf"),
    )

    assert len(dataset) == 4
    assert {"prompt", "chosen", "rejected", "comparison_id", "agreement", "strength", "posterior"} <= set(
        dataset.column_names
    )
    if chat:
        assert dataset[0]["chosen"] == [{"role": "assistant", "content": "good 0"}]
    else:
        assert dataset[0]["chosen"] == "good 0"
    assert dataset[3]["strength"] == 2.5


def test_export_preferences_command_writes_the_file_and_records_the_snapshot(campaign, pairs, tmp_path):
    pairs.pair(votes=["a"])
    pairs.pair(votes=["tie"], text="a tie")
    out = tmp_path / "prefs.jsonl"

    call_command("export_preferences", campaign=campaign.name, format="jsonl", out=str(out), verbosity=0)

    [line] = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["chosen"] == [{"role": "assistant", "content": "The sea is wide and blue."}]
    snapshot = PreferenceSnapshot.objects.get()
    assert (snapshot.row_count, snapshot.jsonl_path) == (1, str(out))
    assert snapshot.filters["aggregation"]["drop_ties"] is True


def test_export_preferences_command_keeps_ties_when_asked(campaign, pairs, tmp_path):
    pairs.pair(votes=["tie", "b"])
    out = tmp_path / "prefs.parquet"

    call_command(
        "export_preferences",
        campaign=campaign.name,
        format="parquet",
        out=str(out),
        keep_ties=True,
        prompt_format="auto",
        verbosity=0,
    )

    table = pq.read_table(out)
    assert table.num_rows == 1
    assert table.column("chosen").to_pylist() == ["sea sea sea"]


def test_export_preferences_command_chooses_by_posterior_when_asked(campaign, pairs, tmp_path):
    outvoted = outvoted_pair(pairs)
    out = tmp_path / "prefs.jsonl"

    call_command("export_preferences", campaign=campaign.name, format="jsonl", out=str(out), winner="posterior", verbosity=0)

    by_id = {row["comparison_id"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert by_id[outvoted.pk]["chosen_completion_id"] == outvoted.completion_a_id
    assert PreferenceSnapshot.objects.get().filters["aggregation"]["winner"] == "posterior"


def test_export_preferences_command_exports_unsettled_pairs_only_when_asked(campaign, pairs, tmp_path):
    campaign.annotations_per_pair = 2
    campaign.save()
    pairs.pair(votes=["a"])
    out = tmp_path / "prefs.jsonl"

    call_command("export_preferences", campaign=campaign.name, out=str(out), verbosity=0)
    assert out.read_text(encoding="utf-8") == ""
    call_command("export_preferences", campaign=campaign.name, out=str(out), include_unsettled=True, verbosity=0)

    [line] = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["votes_a"] == 1
    assert PreferenceSnapshot.objects.latest("pk").filters["aggregation"]["settled_only"] is False


def test_snapshot_api_is_staff_only_and_serves_the_file(campaign, pairs, admin_user, alice, artifacts):
    pairs.pair(votes=["a"])
    client = APIClient()
    client.force_authenticate(alice)
    assert client.post("/api/training/snapshots/", {"campaign": campaign.pk}, format="json").status_code == 403

    client.force_authenticate(admin_user)
    created = client.post(
        "/api/training/snapshots/",
        {"campaign": campaign.pk, "format": "jsonl", "aggregation": {"min_agreement": 0.5}},
        format="json",
    )
    assert created.status_code == 201, created.content
    download = client.get(created.json()["download_url"])

    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == created.json()["sha256"] == download["X-Snapshot-Sha256"]
    client.force_authenticate(alice)
    assert client.get(created.json()["download_url"]).status_code == 403


def test_snapshot_api_rejects_an_unknown_aggregation_key(campaign, admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)

    response = client.post(
        "/api/training/snapshots/", {"campaign": campaign.pk, "aggregation": {"majority": 2}}, format="json"
    )

    assert response.status_code == 400
    assert "majority" in response.json()["aggregation"][0]


def test_admin_action_exports_the_selected_campaign(client, campaign, pairs, admin_user, artifacts):
    pairs.pair(votes=["b"])
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:labeling_campaign_changelist"),
        {"action": "export_preferences", "_selected_action": [campaign.pk]},
        follow=True,
    )

    snapshot = PreferenceSnapshot.objects.get()
    assert snapshot.row_count == 1
    assert reverse("training-api:snapshot-file", args=[snapshot.pk]) in response.content.decode()
