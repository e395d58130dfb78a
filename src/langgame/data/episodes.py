"""Episodes on disk: one Parquet row per episode, readable by pandas and Hugging Face `datasets`.

Schema (EPISODE_SCHEMA):
    id       string     unique within the file
    game     string     the game or corpus the episode comes from
    payoff   string     zero_sum | identical_interest | general_sum
    source   string     provenance, e.g. "chats.jsonl:17"
    turns    list<struct<player: int8, text: string, thought: string (null), r1: double, r2: double,
                         tokens: list<int32> (null), logprobs: list<float32> (null), truncated: bool>>
             player 0 is context (system prompt), 1 the user, 2 the LLM; r1, r2 are the rewards
             both players receive when the turn ends; tokens/logprobs are set on sampled turns
    meta     string     JSON object with anything else (task name, answer, seed, ...)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from langgame.errors import LanggameError
from langgame.game import Episode, Payoff, Turn

TURN_TYPE = pa.struct(
    [
        ("player", pa.int8()),
        ("text", pa.string()),
        ("thought", pa.string()),
        ("r1", pa.float64()),
        ("r2", pa.float64()),
        ("tokens", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("truncated", pa.bool_()),
    ]
)
EPISODE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("game", pa.string()),
        ("payoff", pa.string()),
        ("source", pa.string()),
        ("turns", pa.list_(TURN_TYPE)),
        ("meta", pa.string()),
    ]
)


class DataError(LanggameError):
    """A data file or row that cannot be read; the message names the file and row or line."""


def to_row(e: Episode) -> dict:
    turns = [
        {
            "player": t.player, "text": t.text, "thought": t.thought, "r1": t.rewards[0], "r2": t.rewards[1],
            "tokens": t.tokens, "logprobs": t.logprobs, "truncated": t.truncated,
        }
        for t in e.turns
    ]
    return {
        "id": e.id,
        "game": e.game,
        "payoff": e.payoff.value,
        "source": e.source,
        "turns": turns,
        "meta": json.dumps(e.meta, sort_keys=True),
    }


def from_row(row: dict, where: str) -> Episode:
    try:
        turns = [
            Turn(
                int(t["player"]), t["text"], t["thought"], (float(t["r1"]), float(t["r2"])),
                tuple(t["tokens"]) if t.get("tokens") is not None else None,
                tuple(t["logprobs"]) if t.get("logprobs") is not None else None,
                bool(t.get("truncated") or False),
            )
            for t in row["turns"]
        ]
        if not turns:
            raise ValueError("episode has no turns")
        return Episode(
            turns=turns,
            payoff=Payoff(row["payoff"]),
            id=row["id"] or "",
            game=row["game"] or "",
            source=row["source"] or "",
            meta=json.loads(row["meta"] or "{}"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: invalid episode: {e}") from None


def write_episodes(path: str | Path, episodes: list[Episode]) -> Path:
    """Write episodes to Parquet atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([to_row(e) for e in episodes], schema=EPISODE_SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_episodes(path: str | Path, limit: int | None = None) -> list[Episode]:
    """Read an episode Parquet file; a bad file or row is an error naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such episode file (make one with `langgame data prepare` or `langgame data synth`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None
    missing = [n for n in EPISODE_SCHEMA.names if n not in table.column_names]
    if missing:
        raise DataError(f"{path}: not an episode file, missing columns {missing}")
    rows = table.slice(0, limit).to_pylist() if limit else table.to_pylist()
    return [from_row(r, f"{path}: row {i}") for i, r in enumerate(rows)]
