"""Raw files -> episodes (section 5.1): unstructured text becomes question-answer game logs.

Formats (one multi-turn episode per chat line, Q:/A: document, markdown file or regex'd file):
    chat     JSONL, {"messages": [{"role": system|user|assistant, "content": str}, ...], "id"?: str, ...};
             an assistant's "reasoning_content" / "reasoning" / "thinking" string is its thought
    qa       text with `Q:` / `C:` / `A:` markers at line starts (Q-C-A: C is the next answer's
             thought); documents are separated by a `---` line
    heading  markdown: each heading is a player-1 turn, the body up to the next heading its answer
    regex    a user regex with named groups `question`, `answer` and optionally `thought`
    auto     .jsonl -> chat, .md -> heading, anything else -> qa
Chat contents are kept verbatim; every other text segment is stripped of surrounding whitespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from langgame.data.episodes import DataError
from langgame.game import Episode, Turn

FORMATS = ("auto", "chat", "qa", "heading", "regex")
ROLES = {"system": 0, "user": 1, "assistant": 2}
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
MAX_EXAMPLES = 5

_QA_MARKER = re.compile(r"([QCA]):")
_HEADING = re.compile(r"#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(```|~~~)")

Lines = list[tuple[int, str]]  # (1-based line number, line text)


@dataclass
class PrepareSummary:
    """What prepare() did: input files, episodes kept, invalid rows/documents skipped."""

    files: int = 0
    episodes: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # the first few "file:line: reason"


def prepare(
    paths: list[Path], fmt: str, *, skip_invalid: bool = False, regex: str | None = None, game: str = ""
) -> tuple[list[Episode], PrepareSummary]:
    """Read raw files into episodes, in file order, with unique ids.

    An invalid row or document raises DataError naming file and line, or with skip_invalid is
    skipped and counted in the summary. A missing file is always an error.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if (fmt == "regex") != (regex is not None):
        raise ValueError("a regex is needed by format 'regex' and only by it")
    parsers: dict[str, Callable[[str, str], Iterator[Episode | DataError]]]
    parsers = {"chat": _chat, "qa": _qa, "heading": _heading}
    if regex is not None:
        parsers["regex"] = partial(_regex, pattern=_compile(regex))
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    summary = PrepareSummary(files=len(paths))
    episodes: list[Episode] = []
    unnamed: list[tuple[Episode, str]] = []
    used: dict[str, str] = {}  # id -> source

    def reject(error: DataError) -> None:
        if not skip_invalid:
            raise error
        summary.skipped += 1
        if len(summary.skipped_examples) < MAX_EXAMPLES:
            summary.skipped_examples.append(str(error))

    for path in paths:
        kind = _auto(path) if fmt == "auto" else fmt
        found = 0
        for item in parsers[kind](str(path), _read(path)):
            found += 1
            if isinstance(item, DataError):
                reject(item)
            elif item.id in used:
                reject(DataError(f"{item.source}: duplicate id {item.id!r} (first at {used[item.id]})"))
            else:
                item.game = game or kind
                episodes.append(item)
                if item.id:
                    used[item.id] = item.source
                else:
                    unnamed.append((item, path.stem))
        if not found:
            reject(DataError(f"{path}: no episodes found"))

    counters: dict[str, int] = {}
    for episode, stem in unnamed:
        n = counters.get(stem, 0)
        while f"{stem}-{n}" in used:
            n += 1
        episode.id = f"{stem}-{n}"
        used[episode.id] = episode.source
        counters[stem] = n + 1
    summary.episodes = len(episodes)
    return episodes, summary


def _auto(path: Path) -> str:
    return {".jsonl": "chat", ".md": "heading"}.get(path.suffix.lower(), "qa")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _attempt(build: Callable[..., Episode], *args) -> Episode | DataError:
    try:
        return build(*args)
    except DataError as e:
        return e


def _numbered(text: str) -> Lines:
    return list(enumerate(text.split("\n"), 1))


# chat


def _chat(name: str, text: str) -> Iterator[Episode | DataError]:
    for line, raw in _numbered(text):
        if raw.strip():
            yield _attempt(_chat_episode, f"{name}:{line}", raw)


def _chat_episode(where: str, raw: str) -> Episode:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON: {e}") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages = row.pop("messages", None)
    if not messages:
        raise DataError(f'{where}: missing or empty "messages"')
    if not isinstance(messages, list):
        raise DataError(f'{where}: "messages" has type {type(messages).__name__}, expected a list')
    id_ = row.pop("id", "")
    if not isinstance(id_, str):
        raise DataError(f'{where}: "id" has type {type(id_).__name__}, expected a string')
    turns = [_chat_turn(where, i, m) for i, m in enumerate(messages, 1)]
    players = {t.player for t in turns}
    for player, role in ((1, "user"), (2, "assistant")):
        if player not in players:
            raise DataError(f"{where}: no {role} message (an episode needs a user and an assistant turn)")
    return Episode(turns, id=id_, source=where, meta=row)


def _chat_turn(where: str, i: int, message: object) -> Turn:
    """Message i (1-based) of a chat row as a turn; contents are kept verbatim."""
    if not isinstance(message, dict):
        raise DataError(f"{where}: message {i} has type {type(message).__name__}, expected an object")
    role = message.get("role")
    if role not in ROLES:
        raise DataError(f"{where}: message {i} has role {role!r} (expected one of {', '.join(ROLES)})")
    unsupported = sorted(set(message) - {"role", "content", *REASONING_KEYS})
    if unsupported:
        raise DataError(f"{where}: message {i} has unsupported key {unsupported[0]!r} (supported: role, content, {', '.join(REASONING_KEYS)})")
    content = message.get("content")
    if not isinstance(content, str):
        raise DataError(f"{where}: message {i} content has type {type(content).__name__}, expected a string")
    keys = [k for k in REASONING_KEYS if message.get(k) is not None]
    if not keys:
        return Turn(ROLES[role], content)
    thought = message[keys[0]]
    if role != "assistant":
        raise DataError(f"{where}: message {i} ({role}) has {keys[0]!r}; only assistant messages may reason")
    if not isinstance(thought, str):
        raise DataError(f"{where}: message {i} {keys[0]!r} has type {type(thought).__name__}, expected a string")
    if any(message[k] != thought for k in keys[1:]):
        raise DataError(f"{where}: message {i} has differing reasoning in {', '.join(keys)}")
    return Turn(2, content, thought)


# qa


def _qa(name: str, text: str) -> Iterator[Episode | DataError]:
    document: Lines = []
    for line, raw in [*_numbered(text), (0, "---")]:  # a final separator closes the last document
        if raw.strip() != "---":
            document.append((line, raw))
        elif any(r.strip() for _, r in document):
            yield _attempt(_qa_episode, name, document)
            document = []
        else:
            document = []


def _qa_episode(name: str, document: Lines) -> Episode:
    segments: list[tuple[str, int, list[str]]] = []  # (marker, line, text lines)
    for line, raw in document:
        if m := _QA_MARKER.match(raw):
            segments.append((m[1], line, [raw[m.end():]]))
        elif segments:
            segments[-1][2].append(raw)
        elif raw.strip():
            raise DataError(f"{name}:{line}: text before the first Q: marker")
    turns: list[Turn] = []
    thought: str | None = None
    expect, last = "Q", None
    for marker, line, body in segments:
        if marker not in expect:
            raise _qa_order_error(name, last, marker, line)
        text = "\n".join(body).strip()
        if not text:
            raise DataError(f"{name}:{line}: empty {marker}: segment")
        if marker == "Q":
            turns.append(Turn(1, text))
            expect = "CA"
        elif marker == "C":
            thought, expect = text, "A"
        else:
            turns.append(Turn(2, text, thought))
            thought, expect = None, "Q"
        last = (marker, line)
    if expect != "Q":
        raise _qa_order_error(name, last, None, None)
    return Episode(turns, source=f"{name}:{segments[0][1]}")


def _qa_order_error(name: str, last: tuple[str, int] | None, marker: str | None, line: int | None) -> DataError:
    """The error for `marker` at `line` (None: end of document) after segment `last`."""
    if last and last[0] == "C":
        return DataError(f"{name}:{last[1]}: C: is not followed by A:")
    if marker is None:
        return DataError(f"{name}:{last[1]}: Q: has no A:")
    if marker == "Q":
        return DataError(f"{name}:{line}: Q: follows the Q: at line {last[1]} without an A:")
    return DataError(f"{name}:{line}: {marker}: without a preceding Q:")


# heading


def _heading(name: str, text: str) -> Iterator[Episode | DataError]:
    yield _attempt(_heading_episode, name, _numbered(text))


def _heading_episode(name: str, lines: Lines) -> Episode:
    """Headings outside fenced code blocks ask; the body up to the next heading answers."""
    sections: list[tuple[int, str, list[str]]] = []  # (heading line, heading text, body lines)
    fence = None
    for line, raw in lines:
        if fence is None and (m := _HEADING.fullmatch(raw)):
            if not m[1]:
                raise DataError(f"{name}:{line}: empty heading")
            sections.append((line, m[1], []))
            continue
        if m := _FENCE.match(raw):
            fence = None if fence == m[1] else fence or m[1]
        if sections:
            sections[-1][2].append(raw)
        elif raw.strip():
            raise DataError(f"{name}:{line}: text before the first heading")
    if not sections:
        raise DataError(f"{name}: no headings")
    turns: list[Turn] = []
    for line, question, body in sections:
        answer = "\n".join(body).strip()
        if not answer:
            raise DataError(f"{name}:{line}: heading {question!r} has an empty body")
        turns += [Turn(1, question), Turn(2, answer)]
    return Episode(turns, source=f"{name}:{sections[0][0]}")


# regex


def _compile(regex: str) -> re.Pattern:
    try:
        pattern = re.compile(regex, re.MULTILINE | re.DOTALL)
    except re.error as e:
        raise DataError(f"regex {regex!r}: {e}") from None
    missing = [g for g in ("question", "answer") if g not in pattern.groupindex]
    if missing:
        raise DataError(f"regex {regex!r} has no named group {' or '.join(missing)} (write (?P<{missing[0]}>...))")
    return pattern


def _regex(name: str, text: str, pattern: re.Pattern) -> Iterator[Episode | DataError]:
    yield _attempt(_regex_episode, name, text, pattern)


def _regex_episode(name: str, text: str, pattern: re.Pattern) -> Episode:
    turns: list[Turn] = []
    first = None
    for m in pattern.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        first = first or line
        question, answer = (m["question"] or "").strip(), (m["answer"] or "").strip()
        for group, value in (("question", question), ("answer", answer)):
            if not value:
                raise DataError(f"{name}:{line}: regex match has an empty {group}")
        thought = (m.groupdict().get("thought") or "").strip() or None
        turns += [Turn(1, question), Turn(2, answer, thought)]
    if not turns:
        raise DataError(f"{name}: regex {pattern.pattern!r} matches nothing")
    return Episode(turns, source=f"{name}:{first}")
