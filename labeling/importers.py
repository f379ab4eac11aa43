"""Parsing prompt files (JSONL with prompt or messages, CSV, HH-RLHF transcripts) and preference
files (HH-RLHF, TRL prompt/chosen/rejected).

Parsing is pure: it returns validated rows or raises PromptFileError listing the
file's bad lines (line, field, problem). Storing them is labeling.services.prompts_import
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


PROBLEMS_SHOWN = 50  # a file with more bad lines lists these and counts the rest


@dataclass(frozen=True)
class LineProblem:
    """One bad line: its number, the field at fault ("" when the line as a whole is), and what is wrong."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: field '{self.field}'" if self.field else f"line {self.line}:"
        return f"{where} {self.problem}"


class PromptFileError(ValueError):
    """The file's bad lines (the first PROBLEMS_SHOWN of them; `more` counts the rest). Nothing of it is stored."""

    def __init__(self, source: str, problems: list[LineProblem], more: int = 0) -> None:
        self.source, self.problems, self.more = source, tuple(problems), more
        self.line = problems[0].line
        self.reason = str(problems[0]).split(": ", 1)[1]
        shown = "\n".join(f"{source} {p}" for p in problems)
        tail = f"\nand {more} more bad line{'s' if more != 1 else ''}" if more else ""
        super().__init__(shown + tail)

    @property
    def count(self) -> int:
        return len(self.problems) + self.more


class _LineError(ValueError):
    """Raised inside the parsers for one bad line; parse() collects them."""

    def __init__(self, line: int, problem: str, field: str = "") -> None:
        self.problem = LineProblem(line=line, field=field, problem=problem)
        super().__init__(str(self.problem))


class TurnError(ValueError):
    """A chat prompt's turn (0-based `turn`, None for the list as a whole) is not valid; `part` is role or content."""

    def __init__(self, turn: int | None, part: str, reason: str) -> None:
        self.turn, self.part, self.reason = turn, part, reason
        super().__init__(f"{self.field} {reason}")

    @property
    def field(self) -> str:
        if self.turn is None:
            return "messages"
        return f"messages[{self.turn}].{self.part}" if self.part else f"messages[{self.turn}]"


@dataclass
class PromptRow:
    line: int
    text: str = ""
    messages: list[dict] | None = None
    tags: list[str] = field(default_factory=list)
    split: str = Split.TRAIN
    priority: int = 0
    external_id: str = ""
    kind: str = "text"  # text, messages or hh: what describe_format reports

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


def parse(stream: Iterable[str], *, source: str, fmt: str) -> list[PromptRow]:
    """The file's rows, validated, or PromptFileError listing its bad lines (all of them, up to PROBLEMS_SHOWN).

    `stream` should be decoded with errors="surrogateescape": a byte that is not UTF-8 is then
    reported with its line and field, like any other bad value.
    """
    if fmt not in FORMATS:
        raise PromptFileError(source, [LineProblem(0, "", f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")])
    stream = _without_bom(stream)
    return _collected(_parse_csv(stream) if fmt == "csv" else _parse_jsonl(stream), source)


def _collected(items: Iterable, source: str) -> list:
    """The good rows of `items`, or PromptFileError listing its LineProblems (up to PROBLEMS_SHOWN)."""
    rows: list = []
    problems: list[LineProblem] = []
    more = 0
    for item in items:
        if not isinstance(item, LineProblem):
            if not problems:  # once the file is refused its good rows are of no use
                rows.append(item)
        elif len(problems) < PROBLEMS_SHOWN:
            problems.append(item)
        else:
            more += 1
    if problems:
        raise PromptFileError(source, problems, more)
    return rows


def describe_format(fmt: str, rows: Iterable[PromptRow]) -> str:
    """The format as an admin reads it: "CSV", "HH-RLHF (JSONL)", "JSONL (chat messages)", ..."""
    if fmt == "csv":
        return "CSV"
    kinds = {row.kind for row in rows}
    if kinds == {"hh"}:
        return "HH-RLHF (JSONL)"
    names = [name for kind, name in _KIND_NAMES.items() if kind in kinds]
    return f"JSONL ({' and '.join(names)})" if names else "JSONL"


_KIND_NAMES = {"text": "prompt text", "messages": "chat messages", "hh": "HH-RLHF transcripts"}


def _checked(build: Callable, record: dict, number: int):
    """`build(record, number)`, or the LineProblem it raised."""
    try:
        return build(record, number)
    except _LineError as exc:
        return exc.problem


def _parse_jsonl(stream: Iterable[str]) -> Iterator[PromptRow | LineProblem]:
    for item in _json_records(stream):
        yield item if isinstance(item, LineProblem) else _checked(_row_from_record, item[1], item[0])


def _json_records(stream: Iterable[str]) -> Iterator[tuple[int, dict] | LineProblem]:
    """(line number, object) for each non-blank line, or the LineProblem of a line that is not a JSON object."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield LineProblem(number, "", f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:  # an integer longer than Python converts (4300 digits)
            yield LineProblem(number, "", f"invalid JSON ({exc})")
            continue
        except RecursionError:
            yield LineProblem(number, "", "invalid JSON (nested too deeply)")
            continue
        if not isinstance(record, dict):
            yield LineProblem(number, "", "each line must be a JSON object")
            continue
        yield number, record


def _parse_csv(stream: Iterable[str]) -> Iterator[PromptRow | LineProblem]:
    pending: list[str] = []  # the raw lines of the record being read: to find the column of a csv.Error

    def remembered(lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            pending.append(line)
            yield line

    reader = csv.DictReader(remembered(stream))
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        yield LineProblem(reader.line_num, "", f"the header: {exc}")
        return
    if not header or "prompt" not in header:
        yield LineProblem(1, "", "the header has no 'prompt' column")
        return
    while True:
        pending.clear()
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # Chiefly a field over csv.field_size_limit() (131,072 characters): the limit is
            # process-wide, so it is reported rather than raised; JSONL has no such limit.
            # The underlying reader's count: DictReader's own moves only once a record is complete.
            # The reader's state is lost mid-record (perhaps inside quotes): the lines after it are not read.
            limit = csv.field_size_limit()
            column = _overlong_column("".join(pending), limit)
            if column is not None and column < len(header):
                field, problem = header[column], f"is longer than the CSV field limit ({limit:,} characters)"
            else:
                field, problem = "", f"CSV: {exc}"
            yield LineProblem(
                reader.reader.line_num,
                field,
                f"{problem}; for longer prompts use JSONL. The lines after it were not checked",
            )
            return
        # line_num is the reader's physical line: right even when a quoted field spans lines.
        number = reader.line_num
        if None in record:
            yield LineProblem(number, "", "more fields than the header has columns")
            continue
        if not (record.get("prompt") or "").strip():
            yield LineProblem(number, "prompt", "is empty")
            continue
        tags = record.get("tags") or ""
        record = {k: v for k, v in record.items() if v not in (None, "")}
        record["tags"] = [t.strip() for t in re.split(r"[;|,]", tags) if t.strip()]
        yield _checked(_row_from_record, record, number)


def _overlong_column(text: str, limit: int) -> int | None:
    """The index of the first field longer than `limit` in CSV `text` (the excel dialect csv reads), or None."""
    column = length = 0
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if quoted and char == '"' and text[i + 1 : i + 2] == '"':
            length += 1
            i += 1
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == ",":
            column, length = column + 1, 0
        elif not quoted and char in "\r\n":
            column, length = 0, 0
        else:
            length += 1
        if length > limit:
            return column
        i += 1
    return None


def _line_fail(record: dict, number: int) -> Callable[..., _LineError]:
    """The line's `fail(reason, field)`, once the record holds nothing a column cannot store."""

    def fail(reason: str, field: str = "") -> _LineError:
        return _LineError(number, reason, field)

    problem = json_problem(record)
    if problem:
        raise fail(problem[1], problem[0])
    return fail


def _row_from_record(record: dict, number: int) -> PromptRow:
    fail = _line_fail(record, number)
    row = PromptRow(line=number)
    if "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise fail("must be a non-empty string", "prompt")
        row.text = record["prompt"]
    elif "messages" in record:
        row.messages, row.kind = _turns(record["messages"], fail), "messages"
    elif "chosen" in record and "rejected" in record:
        row.messages, row.kind = _hh_split(record["chosen"], record["rejected"], fail)[0], "hh"
    else:
        raise fail("needs a 'prompt' string, a 'messages' list, or HH-RLHF 'chosen'/'rejected' transcripts")

    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() and len(t) <= 100 for t in tags):
        raise fail("must be a list of non-empty strings (at most 100 characters)", "tags")
    row.tags = sorted({t.strip() for t in tags})

    split = record.get("split", Split.TRAIN)
    if split not in Split.values:
        raise fail(f"must be one of {', '.join(Split.values)}, not {split!r}", "split")
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
        raise fail(f"must be an integer from {low} to {high}, not {reprlib.repr(priority)}", "priority") from None

    row.external_id = _external_id(record, fail)
    return row


def _external_id(record: dict, fail) -> str:
    external_id = record.get("id", "")
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool):
        raise fail("must be a string or an integer", "id")
    return str(external_id)[:255]


def _turns(value: object, fail, name: str = "messages", *, prompt: bool = True) -> list[dict]:
    """chat_messages for the field `name` of a file's line, a broken rule raised through `fail`."""
    try:
        return chat_messages(value, prompt=prompt)
    except TurnError as exc:
        raise fail(exc.reason, name + exc.field.removeprefix("messages")) from None


def chat_messages(value: object, *, prompt: bool = True) -> list[dict]:
    """A chat prompt's turns, checked: a non-empty list of {role, content}, the last turn the user's
    (with `prompt` False, a whole conversation: any last turn).

    The one owner of these rules: files (above) and the admin's turns editor (labeling.forms) both ask it.
    Raises TurnError naming the turn.
    """
    if not isinstance(value, list) or not value:
        raise TurnError(None, "", "must be a non-empty list of {role, content}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "content" not in message:
            raise TurnError(i, "", "must be an object with exactly 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise TurnError(i, "role", f"must be one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise TurnError(i, "content", "must be a non-empty string")
        messages.append({"role": message["role"], "content": message["content"]})
    if prompt and messages[-1]["role"] != "user":
        last = len(messages) - 1
        raise TurnError(last, "role", "must be user: the last message is the user's turn (the model answers it)")
    return messages


def _hh_split(chosen: object, rejected: object, fail) -> tuple[list[dict], int]:
    """An HH-RLHF pair's shared prompt, as chat messages, and where its final "Assistant:" turn starts.

    Both transcripts share every turn up to the final "Assistant:" turn, which is
    where they differ; that shared prefix is the prompt.
    """
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise fail("must both be strings", "chosen, rejected")
    common = 0
    for c, r in zip(chosen, rejected):
        if c != r:
            break
        common += 1
    cut = chosen.rfind(_HH_ASSISTANT, 0, common + 1)
    if cut <= 0:
        raise fail("share no prompt ending in a '\\n\\nAssistant:' turn", "chosen, rejected")
    parts = _HH_TURN.split(chosen[:cut])
    # parts: [preamble, role, text, role, text, ...]
    messages = [
        {"role": "user" if role == "Human" else "assistant", "content": text.strip()}
        for role, text in zip(parts[1::2], parts[2::2])
    ]
    if not messages or any(not m["content"] for m in messages):
        raise fail("the shared HH-RLHF prompt has an empty or missing 'Human:' turn")
    return _turns(messages, fail), cut


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


def parse_preferences(stream: Iterable[str], *, source: str) -> list[PreferenceRow]:
    """A JSONL preference file's rows, validated, or PromptFileError listing its bad lines (as `parse`).

    Each line may be any of PREFERENCE_FORMATS. HH-RLHF: `chosen` and `rejected` transcripts
    ("\\n\\nHuman: ...\\n\\nAssistant: ..."); their shared turns are the prompt, their final Assistant turns
    the answers. TRL: `prompt` (a string or chat messages) with `chosen` and `rejected` (strings, or one
    assistant message each); without `prompt`, `chosen` and `rejected` are whole conversations whose shared
    turns are the prompt (TRL's implicit prompt). Decode `stream` with errors="surrogateescape", as for `parse`.
    """
    items = (
        item if isinstance(item, LineProblem) else _checked(_preference_from_record, item[1], item[0])
        for item in _json_records(_without_bom(stream))
    )
    return _collected(items, source)


def _preference_from_record(record: dict, number: int) -> PreferenceRow:
    fail = _line_fail(record, number)
    if "chosen" not in record or "rejected" not in record:
        raise fail("needs 'chosen' and 'rejected': HH-RLHF transcripts, or TRL answers with a 'prompt'")
    chosen, rejected = record["chosen"], record["rejected"]
    prompt = PromptRow(line=number, external_id=_external_id(record, fail))
    if "prompt" in record:
        fmt = "trl"
        if isinstance(record["prompt"], str):
            if not record["prompt"].strip():
                raise fail("must be a non-empty string or a list of chat messages", "prompt")
            prompt.text = record["prompt"]
        else:
            prompt.messages = _turns(record["prompt"], fail, "prompt")
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
        raise fail("must both be strings or both be lists of chat messages", "chosen, rejected")
    return PreferenceRow(line=number, prompt=prompt, chosen=chosen, rejected=rejected, fmt=fmt)


def _answer(value: object, fail, name: str) -> str:
    """A TRL answer: a string, or (conversational) a list holding one assistant message."""
    if isinstance(value, str):
        if not value.strip():
            raise fail("must be a non-empty string", name)
        return value
    turns = _turns(value, fail, name, prompt=False)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise fail("must be a string or a list of exactly one assistant message", name)
    return turns[0]["content"]


def _hh_answer(tail: str, fail, name: str) -> str:
    if _HH_TURN.search(tail):
        raise fail("differs from the other transcript before its final Assistant turn", name)
    if not tail.strip():
        raise fail("has an empty final Assistant turn", name)
    return tail.strip()


def _implicit_prompt(chosen: object, rejected: object, fail) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen answer, rejected answer) of two conversations that differ only in their last turn."""
    chosen = _turns(chosen, fail, "chosen", prompt=False)
    rejected = _turns(rejected, fail, "rejected", prompt=False)
    shared = 0
    for c, r in zip(chosen[:-1], rejected[:-1]):
        if c != r:
            break
        shared += 1
    if len(chosen) != shared + 1 or len(rejected) != shared + 1 or not shared:
        raise fail("must share every turn but their last (the assistant's answer)", "chosen, rejected")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise fail("must end with the assistant's answer", name)
    return _turns(chosen[:shared], fail, "chosen"), chosen[-1]["content"], rejected[-1]["content"]
