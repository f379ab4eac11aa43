"""Parsing prompt files: JSONL (prompt or messages), CSV, and HH-RLHF transcripts.

Parsing is pure: it returns validated rows or raises PromptFileError listing the
file's bad lines (line, field, problem). Storing them is labeling.services.prompts_import.
"""

import csv
import hashlib
import itertools
import json
import re
import reprlib
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db.backends.base.operations import BaseDatabaseOperations

from config.untrusted import json_problem
from labeling.models import Split

ROLES = ("system", "user", "assistant")
FORMATS = ("jsonl", "csv", "hh")
_WS = re.compile(r"\s+")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
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
    rows: list[PromptRow] = []
    problems: list[LineProblem] = []
    more = 0
    for item in _parse_csv(stream) if fmt == "csv" else _parse_jsonl(stream):
        if isinstance(item, PromptRow):
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


def _checked(record: dict, number: int) -> PromptRow | LineProblem:
    try:
        return _row_from_record(record, number)
    except _LineError as exc:
        return exc.problem


def _parse_jsonl(stream: Iterable[str]) -> Iterator[PromptRow | LineProblem]:
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
        yield _checked(record, number)


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
        yield _checked(record, number)


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


def _row_from_record(record: dict, number: int) -> PromptRow:
    def fail(reason: str, field: str = "") -> _LineError:
        return _LineError(number, reason, field)

    problem = json_problem(record)
    if problem:
        raise fail(problem[1], problem[0])
    row = PromptRow(line=number)
    if "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise fail("must be a non-empty string", "prompt")
        row.text = record["prompt"]
    elif "messages" in record:
        row.messages, row.kind = _turns(record["messages"], fail), "messages"
    elif "chosen" in record and "rejected" in record:
        row.messages, row.kind = _hh_prompt(record["chosen"], record["rejected"], fail), "hh"
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

    external_id = record.get("id", "")
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool):
        raise fail("must be a string or an integer", "id")
    row.external_id = str(external_id)[:255]
    return row


def _turns(value: object, fail) -> list[dict]:
    try:
        return chat_messages(value)
    except TurnError as exc:
        raise fail(exc.reason, exc.field) from None


def chat_messages(value: object) -> list[dict]:
    """A chat prompt's turns, checked: a non-empty list of {role, content}, the last turn the user's.

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
    if messages[-1]["role"] != "user":
        last = len(messages) - 1
        raise TurnError(last, "role", "must be user: the last message is the user's turn (the model answers it)")
    return messages


def _hh_prompt(chosen: object, rejected: object, fail) -> list[dict]:
    """The shared prompt of an HH-RLHF pair, as chat messages.

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
    cut = chosen.rfind("\n\nAssistant:", 0, common + 1)
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
    return _turns(messages, fail)
