"""Importing existing preference data (HH-RLHF, TRL) as judged pairs of source "imported"."""

import io
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from generation import services
from generation.models import Completion, ModelVersion, ModelVersionStatus
from labeling import quality, selectors
from labeling import services as labeling_services
from labeling.importers import PromptFileError
from labeling.models import Campaign, Choice, Comparison, ComparisonStatus, Judgment, JudgmentSource, Prompt, Split
from tests.labeling.factories import make_pairs
from training import export
from training.config import AggregationPolicy
from training.selectors import round_evidence

pytestmark = pytest.mark.django_db

HH = {
    "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: And of Italy?"
    "\n\nAssistant: Rome is the capital of Italy.",
    "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: And of Italy?"
    "\n\nAssistant: I don't know.",
}
TRL_STRING = {"prompt": "Name a prime number.", "chosen": "7", "rejected": "8", "id": "p-1"}
TRL_CHAT = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
    "chosen": [{"role": "assistant", "content": "Hello!"}],
    "rejected": [{"role": "assistant", "content": "No."}],
}
TRL_IMPLICIT = {
    "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}],
}
B_HH = "\n\nHuman: q\n\nAssistant: b"
USER_Q, USER_OTHER = {"role": "user", "content": "q"}, {"role": "user", "content": "other"}
ASSISTANT_B = {"role": "assistant", "content": "b"}
ONLY_HUMAN = AggregationPolicy()
ONLY_IMPORTED = AggregationPolicy(sources=("imported",))


def _jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _import(campaign, text: str, source: str = "prefs.jsonl", use_as: str = "train"):
    return services.preferences_import(campaign=campaign, stream=io.StringIO(text), source=source, use_as=use_as)


def _rows(campaign, split=Split.TRAIN, policy=ONLY_IMPORTED) -> list[dict]:
    return list(export.preference_rows(campaign=campaign, split=split, policy=policy, conversational=True))


def _pair(comparison: Comparison) -> tuple[str, str]:
    """(chosen text, rejected text) by the pair's imported judgment."""
    judgment = comparison.judgments.get()
    a, b = comparison.completion_a.text, comparison.completion_b.text
    return (a, b) if judgment.choice == Choice.A else (b, a)


def test_hh_rlhf_transcripts_become_a_chat_prompt_and_a_judged_pair(campaign):
    result = _import(campaign, _jsonl(HH), source="/data/hh-train.jsonl")

    assert (result.created, result.duplicates, result.identical) == (1, 0, 0)
    assert result.formats == {"HH-RLHF transcripts": 1}
    prompt = Prompt.objects.get()
    assert prompt.messages == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert (prompt.split, prompt.source) == (Split.TRAIN, "hh-train.jsonl")
    comparison = Comparison.objects.get()
    assert _pair(comparison) == ("Rome is the capital of Italy.", "I don't know.")
    assert (comparison.status, comparison.judgments_count, comparison.is_gold) == (ComparisonStatus.COMPLETE, 1, False)
    judgment = Judgment.objects.get()
    assert judgment.source == JudgmentSource.IMPORTED and not judgment.annotator.is_active
    version = ModelVersion.objects.get(name="imported:hh-train.jsonl")
    assert version.status == ModelVersionStatus.RETIRED  # never sampled, never a campaign's policy
    assert set(Completion.objects.values_list("model_version", "backend")) == {(version.pk, "imported")}


def test_trl_string_chat_and_implicit_prompt_lines_in_one_file(campaign):
    result = _import(campaign, _jsonl(TRL_STRING, TRL_CHAT, TRL_IMPLICIT))

    assert result.created == 3
    assert result.formats == {
        "TRL prompt/chosen/rejected": 2,
        "TRL implicit prompt (chosen/rejected conversations)": 1,
    }
    plain = Prompt.objects.get(text="Name a prime number.")
    assert plain.messages is None and plain.external_id == "p-1"
    assert _pair(Comparison.objects.get(prompt=plain)) == ("7", "8")
    chat = Prompt.objects.get(messages__0__content="Be brief.")
    assert _pair(Comparison.objects.get(prompt=chat)) == ("Hello!", "No.")
    implicit = Prompt.objects.get(messages=[{"role": "user", "content": "2+2?"}])
    assert _pair(Comparison.objects.get(prompt=implicit)) == ("4", "5")


def test_the_preferred_answer_is_not_always_side_a(campaign):
    lines = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    _import(campaign, _jsonl(*lines))

    choices = set(Judgment.objects.values_list("choice", flat=True))
    assert choices == {Choice.A, Choice.B}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"prompt": "q", "chosen": "a"}', "needs 'chosen' and 'rejected'"),
        ('{"prompt": "", "chosen": "a", "rejected": "b"}', "field 'prompt' must be a non-empty string"),
        ('{"prompt": "q", "chosen": "", "rejected": "b"}', "field 'chosen' must be a non-empty string"),
        ('{"prompt": "q", "chosen": "a", "rejected": 3}', "field 'rejected' must be a non-empty list"),
        (
            '{"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}',
            "field 'chosen' must be a string or a list of exactly one assistant message",
        ),
        (
            '{"prompt": [{"role": "assistant", "content": "q"}], "chosen": "a", "rejected": "b"}',
            "field 'prompt[0].role' must be user: the last message is the user's turn",
        ),
        ('{"chosen": "no turns here", "rejected": "none here"}', "share no prompt"),
        (
            json.dumps({"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more?\n\nAssistant: yes", "rejected": B_HH}),
            "field 'chosen' differs from the other transcript before its final Assistant turn",
        ),
        (
            json.dumps({"chosen": [USER_Q, {"role": "assistant", "content": "a"}], "rejected": [USER_OTHER, ASSISTANT_B]}),
            "must share every turn but their last",
        ),
        ('{"chosen": "a", "rejected": ["b"]}', "must both be strings or both be lists"),
        ('{"prompt": "q\\u0000", "chosen": "a", "rejected": "b"}', "field 'prompt' contains a NUL character"),
    ],
)
def test_a_bad_line_names_file_line_and_field_and_nothing_is_written(campaign, line, reason):
    text = _jsonl(TRL_STRING, HH) + line + "\n"

    with pytest.raises(PromptFileError, match="prefs.jsonl line 3: ") as caught:
        _import(campaign, text, source="/tmp/prefs.jsonl")

    assert reason in caught.value.reason
    assert not Prompt.objects.exists() and not Comparison.objects.exists() and not Judgment.objects.exists()
    assert not ModelVersion.objects.exists() and not Completion.objects.exists()


def test_importing_the_same_file_again_adds_nothing(campaign):
    text = _jsonl(HH, TRL_STRING, TRL_CHAT, TRL_IMPLICIT)
    _import(campaign, text)
    counts = [m.objects.count() for m in (Prompt, Completion, Comparison, Judgment, ModelVersion)]

    again = _import(campaign, text)
    renamed = _import(campaign, text, source="copy-of-prefs.jsonl")

    assert (again.created, again.duplicates) == (0, 4)
    assert (renamed.created, renamed.duplicates) == (0, 4)
    assert [m.objects.count() for m in (Prompt, Completion, Comparison, Judgment)] == counts[:4]


def test_a_line_with_two_identical_answers_is_skipped_and_counted(campaign):
    same = {"prompt": "Echo?", "chosen": "echo", "rejected": "echo "}

    result = _import(campaign, _jsonl(same, TRL_STRING))

    assert (result.created, result.identical) == (1, 1)
    assert not Prompt.objects.filter(text="Echo?").exists()


def test_imported_pairs_export_only_when_imported_judgments_are_asked_for(campaign, alice):
    campaign.annotations_per_pair = 3
    campaign.save()
    _import(campaign, _jsonl(TRL_STRING, HH))

    assert _rows(campaign, policy=ONLY_HUMAN) == []
    rows = _rows(campaign)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ([{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "8"}]),
        (
            [{"role": "assistant", "content": "Rome is the capital of Italy."}],
            [{"role": "assistant", "content": "I don't know."}],
        ),
    ]
    # One imported label settles its pair, whatever the campaign's N.
    assert [(r["judgment_count"], r["agreement"], r["chosen_model_version"]) for r in rows] == [
        (1, 1.0, "imported:prefs.jsonl")
    ] * 2
    # Nothing for annotators to do, and nothing in the human dashboard's figures.
    assert labeling_services.assignment_next(campaign=campaign, annotator=alice) is None
    assert selectors.campaign_progress(campaign=campaign) == (0, 0)
    report = quality.campaign_report(campaign=campaign)
    assert (report.comparisons, report.complete, report.overall.judgments) == (0, 0, 0)
    assert report.by_source == {"imported": 2}


def test_use_as_heldout_gives_the_gate_evaluation_pairs_and_never_training_rows(campaign):
    lines = [{"prompt": f"Held-out question {i}?", "chosen": f"right {i}", "rejected": f"wrong {i}"} for i in range(3)]
    result = _import(campaign, _jsonl(*lines), use_as="heldout")

    assert result.created == 3
    assert set(Prompt.objects.values_list("split", flat=True)) == {Split.HELDOUT}
    assert set(Completion.objects.values_list("is_heldout", flat=True)) == {True}
    assert _rows(campaign, split=Split.TRAIN) == []
    assert len(_rows(campaign, split=Split.HELDOUT)) == 3
    both = AggregationPolicy(sources=("human", "imported"))
    evidence = round_evidence(campaign=campaign, policy=both, min_heldout_pairs=3)
    assert evidence[Split.HELDOUT]["by_source"]["imported"] == 3 and evidence["gate_can_decide"]
    assert not round_evidence(campaign=campaign, policy=ONLY_HUMAN, min_heldout_pairs=3)["gate_can_decide"]


def test_pairs_on_a_prompt_already_in_the_other_split_are_counted_and_stay_held_out(campaign):
    held_out = io.StringIO(json.dumps({"prompt": TRL_STRING["prompt"], "split": "heldout"}))
    labeling_services.prompts_import(campaign=campaign, stream=held_out, source="p.jsonl")

    result = _import(campaign, _jsonl(TRL_STRING, HH), use_as="train")

    assert (result.created, result.other_split) == (2, 1)
    assert "1 on prompts the campaign already had in the other split" in str(result)
    assert len(_rows(campaign, split=Split.TRAIN)) == len(_rows(campaign, split=Split.HELDOUT)) == 1


def test_use_as_gold_makes_gold_pairs_with_the_preferred_answer_served_to_annotators(campaign, alice):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign)  # regular work: gold is mixed in only while some is left

    _import(campaign, _jsonl(TRL_STRING), use_as="gold")

    gold = Comparison.objects.get(is_gold=True)
    assert gold.status == ComparisonStatus.OPEN
    chosen, _ = _pair(gold)
    assert (gold.completion_a.text if gold.gold_choice == Choice.A else gold.completion_b.text) == chosen == "7"
    assert labeling_services.assignment_next(campaign=campaign, annotator=alice).comparison_id == gold.pk
    assert _rows(campaign) == []  # gold pairs are not training data unless asked for
    assert len(_rows(campaign, policy=AggregationPolicy(sources=("imported",), include_gold=True))) == 1


def test_the_command_creates_the_campaign_and_reports_a_bad_line(tmp_path: Path, capsys):
    good = tmp_path / "hh.jsonl"
    good.write_text(_jsonl(HH, TRL_STRING))
    call_command("import_preferences", str(good), campaign="imports", use_as="heldout")
    out = capsys.readouterr().out
    assert "created campaign 'imports'" in out
    assert "imported 2 judged pairs as heldout" in out and "HH-RLHF transcripts (1 lines)" in out
    assert Prompt.objects.filter(campaign__name="imports", split=Split.HELDOUT).count() == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text(_jsonl(TRL_STRING) + '{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(CommandError, match="nothing was imported: bad.jsonl line 2: needs 'chosen' and 'rejected'"):
        call_command("import_preferences", str(bad), campaign="other")
    assert not Campaign.objects.filter(name="other").exists()


def test_admin_imports_a_file_and_says_the_detected_format(client, admin_user, campaign):
    client.force_login(admin_user)
    url = reverse("admin:labeling_comparison_upload")
    assert 'href="%s"' % url in client.get(reverse("admin:labeling_comparison_changelist")).content.decode()

    upload = SimpleUploadedFile("chat.jsonl", _jsonl(TRL_CHAT, TRL_IMPLICIT).encode())
    response = client.post(url, {"campaign": campaign.pk, "file": upload, "use_as": "train"}, follow=True)

    page = response.content.decode()
    assert "From chat.jsonl into helpfulness: imported 2 judged pairs as train" in page
    assert "TRL implicit prompt (chosen/rejected conversations) (1 lines)" in page
    assert Judgment.objects.filter(source=JudgmentSource.IMPORTED).count() == 2

    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "q", "chosen": "a", "rejected": "\xff"}\n')
    response = client.post(url, {"campaign": campaign.pk, "file": bad, "use_as": "gold"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Nothing was imported: bad.jsonl has 1 bad line" in page
    assert '<td>bad.jsonl</td><td>1</td><td class="field">rejected</td>' in page
    assert Comparison.objects.count() == 2
