import json
import re

import pandas as pd
import pytest

from langgame.data.episodes import DataError, read_episodes, write_episodes
from langgame.data.prepare import prepare
from langgame.game import Turn


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, *rows):
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def chat(*pairs, **top):
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **top}


def turns(episode):
    return [(t.player, t.text, t.thought) for t in episode.turns]


QA_TEXT = """\
Q: What is 2+2?
C: Two and two
   make four.
A: 4
Q:   And 3+3?
A:
6

---
Q: Capital of France?
A: Paris
"""


def test_chat_multi_turn_with_reasoning_kept_verbatim(tmp_path):
    rows = [
        {
            "id": "conv-a",
            "source_corpus": "demo",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "  hi \n"},
                {"role": "assistant", "content": "hello", "reasoning_content": "greet back"},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": " 4 "},
            ],
        },
        "",
        chat(("user", "q"), ("assistant", "a")),
    ]
    f = jsonl(tmp_path / "chats.jsonl", *rows)
    episodes, summary = prepare([f], "chat")
    assert [e.id for e in episodes] == ["conv-a", "chats-0"]
    assert turns(episodes[0]) == [
        (0, "Be brief.", None),
        (1, "  hi \n", None),
        (2, "hello", "greet back"),
        (1, "2+2?", None),
        (2, " 4 ", None),
    ]
    assert turns(episodes[1]) == [(1, "q", None), (2, "a", None)]
    assert episodes[0].meta == {"source_corpus": "demo"}
    assert episodes[1].meta == {}
    assert [e.source for e in episodes] == [f"{f}:1", f"{f}:3"]
    assert {e.game for e in episodes} == {"chat"}
    assert (summary.files, summary.episodes, summary.skipped, summary.skipped_examples) == (1, 2, 0, [])


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
def test_chat_reasoning_keys(tmp_path, key):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", key: "hmm"}]}
    episodes, _ = prepare([jsonl(tmp_path / "c.jsonl", row)], "chat")
    assert turns(episodes[0]) == [(1, "q", None), (2, "a", "hmm")]


def test_qa_documents_multi_turn_and_qca_thought(tmp_path):
    f = write(tmp_path / "notes.txt", QA_TEXT)
    episodes, summary = prepare([f], "qa", game="arith")
    assert len(episodes) == summary.episodes == 2
    assert turns(episodes[0]) == [
        (1, "What is 2+2?", None),
        (2, "4", "Two and two\n   make four."),
        (1, "And 3+3?", None),
        (2, "6", None),
    ]
    assert turns(episodes[1]) == [(1, "Capital of France?", None), (2, "Paris", None)]
    assert [e.source for e in episodes] == [f"{f}:1", f"{f}:10"]
    assert [e.id for e in episodes] == ["notes-0", "notes-1"]
    assert {e.game for e in episodes} == {"arith"}


def test_heading_markdown_one_episode_per_file(tmp_path):
    md = """
# What is Python?
A programming language.

It is popular.
## How do I print? ##
```python
# not a heading
print("hi")
```
### C#
A language too.
"""
    f = write(tmp_path / "faq.md", md)
    episodes, _ = prepare([f], "heading")
    assert len(episodes) == 1
    assert turns(episodes[0]) == [
        (1, "What is Python?", None),
        (2, "A programming language.\n\nIt is popular.", None),
        (1, "How do I print?", None),
        (2, '```python\n# not a heading\nprint("hi")\n```', None),
        (1, "C#", None),
        (2, "A language too.", None),
    ]
    assert (episodes[0].id, episodes[0].source, episodes[0].game) == ("faq-0", f"{f}:2", "heading")


def test_regex_with_thought_group(tmp_path):
    text = "intro\n<q>one</q><t> why </t><a>1</a>\n<q>two\n</q><a>2</a>\n"
    f = write(tmp_path / "log.txt", text)
    regex = r"<q>(?P<question>.*?)</q>(?:<t>(?P<thought>.*?)</t>)?<a>(?P<answer>.*?)</a>"
    episodes, _ = prepare([f], "regex", regex=regex)
    assert turns(episodes[0]) == [(1, "one", None), (2, "1", "why"), (1, "two", None), (2, "2", None)]
    assert (episodes[0].source, episodes[0].game) == (f"{f}:2", "regex")


def test_regex_errors(tmp_path):
    f = write(tmp_path / "log.txt", "nothing here\n")
    with pytest.raises(DataError, match="no named group answer"):
        prepare([f], "regex", regex=r"Q: (?P<question>.*)")
    with pytest.raises(DataError, match=r"log\.txt: regex .* matches nothing"):
        prepare([f], "regex", regex=r"Q: (?P<question>.*?)A: (?P<answer>.*)")
    g = write(tmp_path / "g.txt", "x\n\nQ: hi A: \n")
    with pytest.raises(DataError, match=r"g\.txt:3: regex match has an empty answer"):
        prepare([g], "regex", regex=r"Q: (?P<question>.*?)A:(?P<answer>[^\n]*)")


def test_auto_picks_format_by_extension(tmp_path):
    files = [
        jsonl(tmp_path / "a.jsonl", chat(("user", "u"), ("assistant", "v"))),
        write(tmp_path / "b.md", "# h\nbody\n"),
        write(tmp_path / "c.txt", "Q: q\nA: a\n"),
    ]
    episodes, summary = prepare(files, "auto")
    assert [e.game for e in episodes] == ["chat", "heading", "qa"]
    assert [turns(e) for e in episodes] == [
        [(1, "u", None), (2, "v", None)],
        [(1, "h", None), (2, "body", None)],
        [(1, "q", None), (2, "a", None)],
    ]
    assert summary.files == 3


CHAT_OK = json.dumps(chat(("user", "u"), ("assistant", "a")))
CHAT_ERRORS = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"id": "x"}', 'missing or empty "messages"'),
    ('{"messages": []}', 'missing or empty "messages"'),
    ('{"messages": [{"role": "user", "content": "u"}, "hi"]}', "message 2 has type str, expected an object"),
    (
        json.dumps(chat(("user", "u"), ("robot", "a"))),
        "message 2 has role 'robot' (expected one of system, user, assistant)",
    ),
    ('{"messages": [{"role": "user", "content": 3}]}', "message 1 content has type int, expected a string"),
    (json.dumps(chat(("system", "s"), ("user", "u"))), "no assistant message"),
    (json.dumps(chat(("assistant", "a"))), "no user message"),
    (
        '{"messages": [{"role": "user", "content": "u", "thinking": "t"}, {"role": "assistant", "content": "a"}]}',
        "message 1 (user) has 'thinking'; only assistant messages may reason",
    ),
    (
        '{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "", "tool_calls": []}]}',
        "message 2 has unsupported key 'tool_calls'",
    ),
]


@pytest.mark.parametrize("bad,message", CHAT_ERRORS)
def test_chat_errors_name_file_and_line(tmp_path, bad, message):
    f = jsonl(tmp_path / "chats.jsonl", CHAT_OK, "", bad)
    with pytest.raises(DataError) as info:
        prepare([f], "chat")
    assert str(info.value).startswith(f"{f}:3: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


QA_ERRORS = [
    ("preface\nQ: q\nA: a\n", 1, "text before the first Q: marker"),
    ("Q: q\nA: a\nA: again\n", 3, "A: without a preceding Q:"),
    ("\nQ: q\nC: think\nQ: q2\nA: a\n", 3, "C: is not followed by A:"),
    ("Q: q\nC: think\n", 2, "C: is not followed by A:"),
    ("Q: q\nQ: q2\nA: a\n", 2, "Q: follows the Q: at line 1 without an A:"),
    ("Q: q\nA: a\nQ: q2\n", 3, "Q: has no A:"),
    ("Q: q\nA:   \n\n---\n", 2, "empty A: segment"),
    ("Q: q\nA: a\n---\nQ: q\nC:\nA: a\n", 5, "empty C: segment"),
]


@pytest.mark.parametrize("text,line,message", QA_ERRORS)
def test_qa_errors_name_file_and_line(tmp_path, text, line, message):
    f = write(tmp_path / "doc.txt", text)
    with pytest.raises(DataError, match=f"^{re.escape(str(f))}:{line}: {re.escape(message)}$"):
        prepare([f], "qa")


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("intro\n# h\nbody\n", 1, "text before the first heading"),
        ("# h\nbody\n## empty\n\n", 3, "heading 'empty' has an empty body"),
    ],
)
def test_heading_errors_name_file_and_line(tmp_path, text, line, message):
    f = write(tmp_path / "faq.md", text)
    with pytest.raises(DataError, match=f"^{re.escape(str(f))}:{line}: {re.escape(message)}$"):
        prepare([f], "heading")


def test_skip_invalid_counts_and_keeps_valid(tmp_path):
    f = jsonl(tmp_path / "chats.jsonl", CHAT_OK, "{oops", CHAT_OK, json.dumps(chat(("user", "u"))), CHAT_OK)
    g = write(tmp_path / "qa.txt", "Q: bad\n---\nQ: good\nA: yes\n")
    episodes, summary = prepare([f, g], "auto", skip_invalid=True)
    assert [e.source for e in episodes] == [f"{f}:1", f"{f}:3", f"{f}:5", f"{g}:3"]
    assert [e.id for e in episodes] == ["chats-0", "chats-1", "chats-2", "qa-0"]
    assert (summary.files, summary.episodes, summary.skipped) == (2, 4, 3)
    assert summary.skipped_examples[0].startswith(f"{f}:2: invalid JSON")
    assert summary.skipped_examples[1:] == [
        f"{f}:4: no assistant message (an episode needs a user and an assistant turn)",
        f"{g}:1: Q: has no A:",
    ]


def test_empty_file_is_reported(tmp_path):
    f = write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(DataError, match="empty.txt: no episodes found"):
        prepare([f], "qa")
    episodes, summary = prepare([f], "qa", skip_invalid=True)
    assert (episodes, summary.skipped) == ([], 1)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        prepare([tmp_path / "nope.jsonl"], "chat", skip_invalid=True)
    with pytest.raises(ValueError, match="auto, chat, qa, heading, regex"):
        prepare([], "csv")
    with pytest.raises(ValueError, match="regex"):
        prepare([], "regex")


def test_ids_unique_across_files_and_duplicates_rejected(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    f1 = jsonl(tmp_path / "a" / "x.jsonl", json.dumps(chat(("user", "u"), ("assistant", "v"), id="x-1")), CHAT_OK)
    f2 = jsonl(tmp_path / "b" / "x.jsonl", CHAT_OK, CHAT_OK)
    episodes, _ = prepare([f1, f2], "chat")
    assert [e.id for e in episodes] == ["x-1", "x-0", "x-2", "x-3"]
    dup = jsonl(tmp_path / "dup.jsonl", json.dumps(chat(("user", "u"), ("assistant", "v"), id="x-1")))
    with pytest.raises(DataError, match=re.escape(f"{dup}:1: duplicate id 'x-1' (first at {f1}:1)")):
        prepare([f1, dup], "chat")


def test_parquet_round_trip_and_pandas(tmp_path):
    f = write(tmp_path / "notes.txt", QA_TEXT)
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "reasoning": "r"}]
    c = jsonl(tmp_path / "chats.jsonl", {"id": "k", "lang": "en", "messages": messages})
    episodes, _ = prepare([f, c], "auto")
    out = write_episodes(tmp_path / "out" / "episodes.parquet", episodes)
    back = read_episodes(out)
    assert [(e.id, e.game, e.source, e.meta, e.payoff) for e in back] == [
        (e.id, e.game, e.source, e.meta, e.payoff) for e in episodes
    ]
    assert [e.turns for e in back] == [e.turns for e in episodes]
    assert back[2].turns == [Turn(1, "u"), Turn(2, "a", "r")] and back[2].meta == {"lang": "en"}
    df = pd.read_parquet(out)
    assert list(df.columns) == ["id", "game", "payoff", "source", "turns", "meta"]
    assert list(df["id"]) == ["notes-0", "notes-1", "k"]
    assert df["turns"][0][1]["thought"] == "Two and two\n   make four."
    assert json.loads(df["meta"][2]) == {"lang": "en"}
