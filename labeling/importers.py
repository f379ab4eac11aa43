"""Parsing prompt files (JSONL with prompt or messages, CSV, HH-RLHF transcripts) and preference
files (HH-RLHF, TRL prompt/chosen/rejected).

Parsing is pure: it yields validated rows or raises PromptFileError naming the
file, the line and the problem. Storing them is labeling.services.prompts_import
and generation.services.preferences_import.
"""

import csv
import hashlib
import itertools
import json
import re
import reprlib
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.db.backends.base.operations import BaseDatabaseOperations

from config.untrusted import json_problem
from labeling.models import Split

ROLES = ("system", "user", "assistant")
FORMATS = ("jsonl", "csv", "hh")
_WS = re.compile(r"\s+")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ASSISTANT = "\n\nAssistant:"
# Prompt.priority (and Comparison.priority, its copy) is an IntegerField: 32 bits on PostgreSQL.
PRIORITY_RANGE = BaseDatabaseOperations.integer_field_ranges["IntegerField"]
_BOM = "\ufeff"


class PromptFileError(ValueError):
    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        super().__init__(f"{source} line {line}: {reason}")


@dataclass
class PromptRow:
    line: int
    text: str = ""
    messages: list[dict] | None = None
    tags: list[str] = field(default_factory=list)
    split: str = Split.TRAIN
    priority: int = 0
    external_id: str = ""

    @property
    def content_hash(self) -> str:
        return content_hash(text=self.text, messages=self.messages)


def normalize(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def content_hash(*, text: str, messages: list[dict] | None) -> str:
    if messages:
        canonical = json.dumps([[m["role"], normalize(m["content"])] for m in messages], ensure_ascii=False)
    else:
        canonical = normalize(text)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def detect_format(name: str) -> str:
    return "csv" if name.lower().endswith(".csv") else "jsonl"


def _without_bom(stream: Iterable[str]) -> Iterator[str]:
    """The lines, the first without the UTF-8 byte order mark that spreadsheet programs write."""
    lines = iter(stream)
    first = next(lines, None)
    if first is None:
        return iter(())
    return itertools.chain([first.removeprefix(_BOM)], lines)


def parse(stream: Iterable[str], *, source: str, fmt: str) -> Iterator[PromptRow]:
    """The file's rows, validated. `stream` should be decoded with errors="surrogateescape":
    a byte that is not UTF-8 is then reported with its line and field, like any other bad value."""
    if fmt not in FORMATS:
        raise PromptFileError(source, 0, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    stream = _without_bom(stream)
    if fmt == "csv":
        yield from _parse_csv(stream, source)
    else:
        yield from _parse_jsonl(stream, source)


def _parse_jsonl(stream: Iterable[str], source: str) -> Iterator[PromptRow]:
    for number, record in _json_records(stream, source):
        yield _row_from_record(record, source, number)


def _json_records(stream: Iterable[str], source: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object raises PromptFileError."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PromptFileError(source, number, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        except ValueError as exc:  # an integer longer than Python converts (4300 digits)
            raise PromptFileError(source, number, f"invalid JSON ({exc})") from None
        except RecursionError:
            raise PromptFileError(source, number, "invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise PromptFileError(source, number, "each line must be a JSON object")
        yield number, record


def _csv_records(reader: csv.DictReader, source: str) -> Iterator[dict]:
    """The reader's records, a malformed one (csv.Error) raised as a PromptFileError naming its line."""
    try:
        yield from reader
    except csv.Error as exc:
        # Chiefly a field over csv.field_size_limit() (131,072 characters): the limit is
        # process-wide, so it is reported rather than raised; JSONL has no such limit.
        # The underlying reader's count: DictReader's own moves only once a record is complete.
        raise PromptFileError(source, reader.reader.line_num, f"CSV: {exc} (for longer prompts use JSONL)") from None


def _parse_csv(stream: Iterable[str], source: str) -> Iterator[PromptRow]:
    reader = csv.DictReader(stream)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise PromptFileError(source, reader.line_num, f"the header: {exc}") from None
    if not header or "prompt" not in header:
        raise PromptFileError(source, 1, "the header has no 'prompt' column")
    for record in _csv_records(reader, source):
        # line_num is the reader's physical line: right even when a quoted field spans lines.
        number = reader.line_num
        if None in record:
            raise PromptFileError(source, number, "more fields than the header has columns")
        tags = record.get("tags") or ""
        record = {k: v for k, v in record.items() if v not in (None, "")}
        record["tags"] = [t.strip() for t in re.split(r"[;|,]", tags) if t.strip()]
        yield _row_from_record(record, source, number)


def _checked(record: dict, source: str, number: int) -> Callable[[str], PromptFileError]:
    """The line's `fail` (an error naming file and line), once the record holds nothing a column cannot store."""

    def fail(reason: str) -> PromptFileError:
        return PromptFileError(source, number, reason)

    problem = json_problem(record)
    if problem:
        raise fail(f"field '{problem[0]}' {problem[1]}")
    return fail


def _row_from_record(record: dict, source: str, number: int) -> PromptRow:
    fail = _checked(record, source, number)
    row = PromptRow(line=number)
    if "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise fail("field 'prompt' must be a non-empty string")
        row.text = record["prompt"]
    elif "messages" in record:
        row.messages = _messages(record["messages"], fail)
    elif "chosen" in record and "rejected" in record:
        row.messages = _hh_prompt(record["chosen"], record["rejected"], fail)
    else:
        raise fail("needs a 'prompt' string, a 'messages' list, or HH-RLHF 'chosen'/'rejected' transcripts")

    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() and len(t) <= 100 for t in tags):
        raise fail("field 'tags' must be a list of non-empty strings (at most 100 characters)")
    row.tags = sorted({t.strip() for t in tags})

    split = record.get("split", Split.TRAIN)
    if split not in Split.values:
        raise fail(f"field 'split' must be one of {', '.join(Split.values)}, not {split!r}")
    row.split = split

    priority = record.get("priority", 0)
    low, high = PRIORITY_RANGE
    try:
        if isinstance(priority, bool) or (isinstance(priority, float) and not priority.is_integer()):
            raise ValueError
        row.priority = int(priority)
        if not low <= row.priority <= high:
            raise ValueError
    except (TypeError, ValueError):
        raise fail(f"field 'priority' must be an integer from {low} to {high}, not {reprlib.repr(priority)}") from None

    row.external_id = _external_id(record, fail)
    return row


def _external_id(record: dict, fail) -> str:
    external_id = record.get("id", "")
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool):
        raise fail("field 'id' must be a string or an integer")
    return str(external_id)[:255]


def _turns(value: object, fail, name: str = "messages") -> list[dict]:
    """A non-empty list of chat messages, each exactly {role, content} with a known role and some text."""
    if not isinstance(value, list) or not value:
        raise fail(f"field '{name}' must be a non-empty list of {{role, content}}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "content" not in message:
            raise fail(f"{name}[{i}] must be an object with exactly 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise fail(f"{name}[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise fail(f"{name}[{i}].content must be a non-empty string")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _messages(value: object, fail, name: str = "messages") -> list[dict]:
    """A chat prompt: turns whose last is the user's."""
    messages = _turns(value, fail, name)
    if messages[-1]["role"] != "user":
        raise fail(f"the last message of '{name}' must be the user's turn (the model answers it)")
    return messages


def _hh_prompt(chosen: object, rejected: object, fail) -> list[dict]:
    """The shared prompt of an HH-RLHF pair, as chat messages."""
    return _hh_split(chosen, rejected, fail)[0]


def _hh_split(chosen: object, rejected: object, fail) -> tuple[list[dict], int]:
    """An HH-RLHF pair's shared prompt, as chat messages, and where its final "Assistant:" turn starts.

    Both transcripts share every turn up to the final "Assistant:" turn, which is
    where they differ; that shared prefix is the prompt.
    """
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise fail("fields 'chosen' and 'rejected' must be strings")
    common = 0
    for c, r in zip(chosen, rejected):
        if c != r:
            break
        common += 1
    cut = chosen.rfind(_HH_ASSISTANT, 0, common + 1)
    if cut <= 0:
        raise fail("'chosen' and 'rejected' share no prompt ending in a '\\n\\nAssistant:' turn")
    parts = _HH_TURN.split(chosen[:cut])
    # parts: [preamble, role, text, role, text, ...]
    messages = [
        {"role": "user" if role == "Human" else "assistant", "content": text.strip()}
        for role, text in zip(parts[1::2], parts[2::2])
    ]
    if not messages or any(not m["content"] for m in messages):
        raise fail("the shared HH-RLHF prompt has an empty or missing 'Human:' turn")
    return _messages(messages, fail), cut


# --- Preference files: pairs with a known answer -------------------------------

# What an imported pair is for: training data, held-out evaluation pairs, or gold pairs scoring annotators.
PREFERENCE_USES = ("train", "heldout", "gold")
PREFERENCE_FORMATS = {
    "hh": "HH-RLHF transcripts",
    "trl": "TRL prompt/chosen/rejected",
    "trl-implicit": "TRL implicit prompt (chosen/rejected conversations)",
}


@dataclass
class PreferenceRow:
    """One line of a preference file: a prompt and two answers, the first preferred."""

    line: int
    prompt: PromptRow
    chosen: str
    rejected: str
    fmt: str  # a key of PREFERENCE_FORMATS

    @property
    def identical(self) -> bool:
        """Both answers are the same text: the line says nothing about which is better."""
        return normalize(self.chosen) == normalize(self.rejected)


def parse_preferences(stream: Iterable[str], *, source: str) -> Iterator[PreferenceRow]:
    """A JSONL preference file's rows, validated; each line may be any of PREFERENCE_FORMATS.

    HH-RLHF: `chosen` and `rejected` transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."); their shared
    turns are the prompt, their final Assistant turns the answers. TRL: `prompt` (a string or chat
    messages) with `chosen` and `rejected` (strings, or one assistant message each); without `prompt`,
    `chosen` and `rejected` are whole conversations whose shared turns are the prompt (TRL's implicit prompt).
    Decode `stream` with errors="surrogateescape", as for `parse`.
    """
    for number, record in _json_records(_without_bom(stream), source):
        yield _preference_from_record(record, source, number)


def _preference_from_record(record: dict, source: str, number: int) -> PreferenceRow:
    fail = _checked(record, source, number)
    if "chosen" not in record or "rejected" not in record:
        raise fail("needs 'chosen' and 'rejected': HH-RLHF transcripts, or TRL answers with a 'prompt'")
    chosen, rejected = record["chosen"], record["rejected"]
    prompt = PromptRow(line=number, external_id=_external_id(record, fail))
    if "prompt" in record:
        fmt = "trl"
        if isinstance(record["prompt"], str):
            if not record["prompt"].strip():
                raise fail("field 'prompt' must be a non-empty string or a list of chat messages")
            prompt.text = record["prompt"]
        else:
            prompt.messages = _messages(record["prompt"], fail, "prompt")
        chosen, rejected = _answer(chosen, fail, "chosen"), _answer(rejected, fail, "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        fmt = "hh"
        prompt.messages, cut = _hh_split(chosen, rejected, fail)
        start = cut + len(_HH_ASSISTANT)
        chosen, rejected = _hh_answer(chosen[start:], fail, "chosen"), _hh_answer(rejected[start:], fail, "rejected")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        fmt = "trl-implicit"
        prompt.messages, chosen, rejected = _implicit_prompt(chosen, rejected, fail)
    else:
        raise fail("fields 'chosen' and 'rejected' must both be strings or both be lists of chat messages")
    return PreferenceRow(line=number, prompt=prompt, chosen=chosen, rejected=rejected, fmt=fmt)


def _answer(value: object, fail, name: str) -> str:
    """A TRL answer: a string, or (conversational) a list holding one assistant message."""
    if isinstance(value, str):
        if not value.strip():
            raise fail(f"field '{name}' must be a non-empty string")
        return value
    turns = _turns(value, fail, name)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise fail(f"field '{name}' must be a string or a list of exactly one assistant message")
    return turns[0]["content"]


def _hh_answer(tail: str, fail, name: str) -> str:
    if _HH_TURN.search(tail):
        raise fail(f"'chosen' and 'rejected' differ before their final Assistant turn (in '{name}')")
    if not tail.strip():
        raise fail(f"the final Assistant turn of '{name}' is empty")
    return tail.strip()


def _implicit_prompt(chosen: object, rejected: object, fail) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen answer, rejected answer) of two conversations that differ only in their last turn."""
    chosen, rejected = _turns(chosen, fail, "chosen"), _turns(rejected, fail, "rejected")
    shared = 0
    for c, r in zip(chosen[:-1], rejected[:-1]):
        if c != r:
            break
        shared += 1
    if len(chosen) != shared + 1 or len(rejected) != shared + 1 or not shared:
        raise fail("'chosen' and 'rejected' must share every turn but their last (the assistant's answer)")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise fail(f"the last message of '{name}' must be the assistant's answer")
    return _messages(chosen[:shared], fail, "chosen"), chosen[-1]["content"], rejected[-1]["content"]
