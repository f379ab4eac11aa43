import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labeling import services
from labeling.importers import PromptFileError
from labeling.models import Prompt, Split, Tag

pytestmark = pytest.mark.django_db


def _jsonl(rows: list[dict]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(r) + "\n" for r in rows))


def _import(campaign, text: str | io.StringIO, source: str = "prompts.jsonl", **kwargs):
    stream = io.StringIO(text) if isinstance(text, str) else text
    return services.prompts_import(campaign=campaign, stream=stream, source=source, **kwargs)


def test_jsonl_with_text_messages_tags_split_priority_and_id(campaign):
    result = _import(
        campaign,
        _jsonl(
            [
                {"prompt": "Write a haiku.", "tags": ["poetry", "short"], "priority": 5, "id": "p1"},
                {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}]},
                {"prompt": "Explain DPO.", "split": "heldout", "id": 7},
            ]
        ),
    )
    assert (result.created, result.duplicates) == (3, 0)
    haiku = Prompt.objects.get(text="Write a haiku.")
    assert (haiku.priority, haiku.external_id, haiku.split) == (5, "p1", Split.TRAIN)
    assert sorted(haiku.tags.values_list("name", flat=True)) == ["poetry", "short"]
    chat = Prompt.objects.get(messages__isnull=False)
    assert chat.messages[-1] == {"role": "user", "content": "Hi?"} and chat.text == ""
    assert Prompt.objects.get(external_id="7").split == Split.HELDOUT


def test_csv_with_prompt_column_and_multiline_quoted_field(campaign):
    text = 'prompt,tags,priority\n"Line one\nline two",a;b,2\nSecond prompt,,\n'
    result = _import(campaign, text, source="prompts.csv")
    assert result.created == 2
    first = Prompt.objects.get(priority=2)
    assert first.text == "Line one\nline two"
    assert sorted(first.tags.values_list("name", flat=True)) == ["a", "b"]


def test_hh_rlhf_rows_become_the_shared_prompt_as_chat_turns(campaign):
    shared = "\n\nHuman: What is a kite?\n\nAssistant: A toy that flies.\n\nHuman: How do I fly one?"
    row = {"chosen": shared + "\n\nAssistant: Run into the wind.", "rejected": shared + "\n\nAssistant: You can't."}
    _import(campaign, _jsonl([row]))
    prompt = Prompt.objects.get()
    assert prompt.messages == [
        {"role": "user", "content": "What is a kite?"},
        {"role": "assistant", "content": "A toy that flies."},
        {"role": "user", "content": "How do I fly one?"},
    ]


def test_hh_rlhf_pair_whose_answers_share_a_first_word_still_cuts_at_the_last_turn(campaign):
    shared = "\n\nHuman: Name a colour."
    row = {"chosen": shared + "\n\nAssistant: Blue is nice.", "rejected": shared + "\n\nAssistant: Blue."}
    _import(campaign, _jsonl([row]))
    assert Prompt.objects.get().messages == [{"role": "user", "content": "Name a colour."}]


def test_duplicates_by_normalized_content_are_skipped_in_file_and_across_imports(campaign):
    rows = [{"prompt": "Say  hello"}, {"prompt": " Say hello \n"}, {"prompt": "Say goodbye"}]
    first = _import(campaign, _jsonl(rows))
    assert (first.created, first.duplicates) == (2, 1)
    again = _import(campaign, _jsonl(rows))
    assert (again.created, again.duplicates) == (0, 3)
    assert Prompt.objects.count() == 2


def test_same_prompt_may_live_in_two_campaigns(campaign):
    from labeling.models import Campaign

    other = Campaign.objects.create(name="other")
    _import(campaign, _jsonl([{"prompt": "Same"}]))
    assert _import(other, _jsonl([{"prompt": "Same"}])).created == 1


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("{not json", "invalid JSON"),
        ('{"prompt": 42}', "field 'prompt' must be a non-empty string"),
        ('{"text": "wrong key"}', "needs a 'prompt' string"),
        ('{"prompt": "x", "split": "test"}', "field 'split' must be one of train, heldout"),
        ('{"prompt": "x", "priority": "high"}', "field 'priority' must be an integer"),
        ('{"prompt": "x", "tags": "a,b"}', "field 'tags' must be a list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "field 'messages[0].role' must be one of"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "last message"),
        ('["a list"]', "must be a JSON object"),
    ],
)
def test_a_bad_line_rejects_the_whole_file_naming_line_and_reason(campaign, bad_line, reason):
    lines = [json.dumps({"prompt": f"good {i}"}) for i in range(1, 777)]
    lines.insert(776, bad_line)  # the bad line is line 777
    with pytest.raises(PromptFileError) as err:
        _import(campaign, "\n".join(lines) + "\n", source="/data/big.jsonl")
    assert err.value.line == 777
    assert reason in str(err.value)
    assert str(err.value).startswith("big.jsonl line 777:")
    assert Prompt.objects.count() == 0 and Tag.objects.count() == 0


def test_csv_without_prompt_column_is_rejected(campaign):
    with pytest.raises(PromptFileError, match="no 'prompt' column"):
        _import(campaign, "question\nwhat?\n", source="q.csv")


def test_command_imports_shows_progress_and_reimport_adds_nothing(campaign, tmp_path: Path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"prompt number {i}", "tags": ["t"]}) + "\n" for i in range(300)))
    call_command("import_prompts", str(path), campaign=campaign.name)
    out = capsys.readouterr()
    assert "p.jsonl (JSONL (prompt text)): imported 300 prompts, skipped 0 duplicates" in out.out
    assert "reading p.jsonl" in out.err  # tqdm writes its bar to stderr
    call_command("import_prompts", str(path), campaign=campaign.name)
    assert "imported 0 prompts, skipped 300 duplicates" in capsys.readouterr().out
    assert Prompt.objects.filter(campaign=campaign).count() == 300


def test_command_names_the_bad_line_and_stores_nothing(campaign, tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    with pytest.raises(CommandError, match=r"nothing was imported: bad.jsonl line 2: field 'prompt'"):
        call_command("import_prompts", str(path), campaign=campaign.name, quiet=True)
    assert Prompt.objects.count() == 0


def test_rejected_file_does_not_leave_a_new_campaign_behind(tmp_path: Path):
    from labeling.models import Campaign

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"oops": 1}\n')
    with pytest.raises(CommandError, match="line 2"):
        call_command("import_prompts", str(path), campaign="brand-new", quiet=True)
    assert not Campaign.objects.filter(name="brand-new").exists()


def test_command_creates_the_campaign_when_missing(tmp_path: Path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\nhello\n")
    call_command("import_prompts", str(path), campaign="fresh", quiet=True)
    assert Prompt.objects.get().campaign.name == "fresh"


def test_heldout_split_is_reproducible_by_seed_and_near_the_fraction(campaign):
    _import(campaign, _jsonl([{"prompt": f"p{i}"} for i in range(1000)]))
    prompts = Prompt.objects.filter(campaign=campaign)
    held = services.prompts_assign_heldout(prompts=prompts, fraction=0.2, seed=3)
    first = set(prompts.filter(split=Split.HELDOUT).values_list("pk", flat=True))
    assert 150 < held < 250 and len(first) == held
    services.prompts_assign_heldout(prompts=prompts, fraction=0.2, seed=4)
    assert set(prompts.filter(split=Split.HELDOUT).values_list("pk", flat=True)) != first
    services.prompts_assign_heldout(prompts=prompts, fraction=0.2, seed=3)
    assert set(prompts.filter(split=Split.HELDOUT).values_list("pk", flat=True)) == first


# --- Input no column can store: a named error, nothing stored -------------------------------------

_GOOD = b'{"prompt": "fine"}\n'


@pytest.mark.parametrize(
    "name, line, reason",
    [
        ("nul.jsonl", b'{"prompt": "a\\u0000b"}', "line 2: field 'prompt' contains a NUL character"),
        ("tag.jsonl", b'{"prompt": "x", "tags": ["ok", "t\\u0000"]}', "line 2: field 'tags[1]' contains a NUL"),
        ("id.jsonl", b'{"prompt": "x", "id": "7\\u0000"}', "line 2: field 'id' contains a NUL"),
        (
            "chat.jsonl",
            b'{"messages": [{"role": "user", "content": "hi\\u0000"}]}',
            "line 2: field 'messages[0].content' contains a NUL",
        ),
        ("escape.jsonl", b'{"prompt": "\\ud800 alone"}', "line 2: field 'prompt' contains U+D800, a lone surrogate"),
        ("bytes.jsonl", b'{"prompt": "\xed\xa0\x80 cesu"}', "line 2: field 'prompt' contains U+DCED, a lone surrogate"),
        ("key.jsonl", b'{"prompt": "x", "\\ud800": 1}', "line 2: field '\\ud800' (the key) contains U+D800"),
        ("big.jsonl", b'{"prompt": "x", "priority": 2147483648}', "line 2: field 'priority' must be an integer from"),
        ("huge.jsonl", b'{"prompt": "x", "priority": 1' + b"0" * 30 + b"}", "line 2: field 'priority' is an integer beyond 64 bits"),
        ("inf.jsonl", b'{"prompt": "x", "priority": 1e400}', "line 2: field 'priority' is not a finite number"),
        ("digits.jsonl", b'{"prompt": "x", "id": 1' + b"0" * 5000 + b"}", "line 2: invalid JSON (Exceeds the limit"),
        ("deep.jsonl", b'{"prompt": "x", "e": ' + b"[" * 5000 + b"]" * 5000 + b"}", "line 2: invalid JSON (nested too deeply)"),
        ("deepish.jsonl", b'{"prompt": "x", "e": ' + b"[" * 100 + b"]" * 100 + b"}", "line 2: field 'e[0][0]"),
        ("nul.csv", b"prompt,tags\nfine,t\na\x00b,t", "line 3: field 'prompt' contains a NUL"),
        ("tags.csv", b"prompt,tags\nfine,t\nx,ok;t\x00", "line 3: field 'tags[1]' contains a NUL"),
        ("bytes.csv", b"prompt,tags\nfine,t\n\xff,t", "line 3: field 'prompt' contains U+DCFF"),
        ("long.csv", b"prompt\nfine\n" + b"x" * 200_000, "line 3: field 'prompt' is longer than the CSV field limit (131,072"),
    ],
)
def test_input_no_column_can_store_is_refused_naming_file_line_and_field(campaign, tmp_path: Path, name, line, reason):
    path = tmp_path / name
    path.write_bytes((b"" if name.endswith(".csv") else _GOOD) + line + b"\n")
    with pytest.raises(CommandError) as err:
        call_command("import_prompts", str(path), campaign=campaign.name, quiet=True)
    assert str(err.value).startswith(f"nothing was imported: {name} line")
    assert reason in str(err.value)
    assert Prompt.objects.count() == 0 and Tag.objects.count() == 0


@pytest.mark.parametrize(
    "name, content",
    [
        ("excel.csv", "prompt,tags\nWhat is a tide?,sea;moon\n"),
        ("excel.jsonl", '{"prompt": "What is a tide?", "tags": ["moon", "sea"]}\n'),
    ],
)
def test_a_utf8_byte_order_mark_is_accepted(campaign, tmp_path: Path, name, content):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    call_command("import_prompts", str(path), campaign=campaign.name, quiet=True)
    prompt = Prompt.objects.get()
    assert prompt.text == "What is a tide?"
    assert sorted(prompt.tags.values_list("name", flat=True)) == ["moon", "sea"]


def test_command_lists_every_bad_line_up_to_the_cap_then_counts_the_rest(campaign, tmp_path: Path, monkeypatch):
    from labeling import importers

    monkeypatch.setattr(importers, "PROBLEMS_SHOWN", 3)
    path = tmp_path / "bad.csv"
    path.write_text("prompt,split\nok,train\n,train\nx,test\ny,\n\"z\",heldout,extra\nw,nope\nv,never\n")
    with pytest.raises(CommandError) as err:
        call_command("import_prompts", str(path), campaign=campaign.name, quiet=True)
    assert str(err.value).splitlines() == [
        "nothing was imported: bad.csv line 3: field 'prompt' is empty",
        "bad.csv line 4: field 'split' must be one of train, heldout, not 'test'",
        "bad.csv line 6: more fields than the header has columns",
        "and 2 more bad lines",
    ]
    assert Prompt.objects.count() == 0
