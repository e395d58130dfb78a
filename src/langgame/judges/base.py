"""The judge interface, composition, caching and the registry of judges.

A judge scores samples with the TRL reward-function shape:

    judge(prompts: list[str], completions: list[str], **columns) -> list[float | None]

`columns` are per-sample lists (secret=[...], answer=[...], task=[...]); a keyword whose value is
not a list of len(prompts) (TRL's `trainer_state`, say) is shared by all samples. None means "no
score for this sample". Judges accept and ignore columns they do not use. Every judge instance
has a `__name__`, which TRL uses to name reward columns in its logs.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from langgame.errors import LanggameError

Score = float | None


class JudgeError(LanggameError):
    """A judge that cannot be built, loaded or called as configured."""


@runtime_checkable
class Judge(Protocol):
    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[Score]: ...


def text_of(x: Any) -> str:
    """A prompt or completion as text; TRL's conversational form (a list of messages) gives the last content."""
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)) and x and isinstance(x[-1], dict):
        return str(x[-1].get("content", ""))
    return "" if x is None else str(x)


def per_sample(columns: dict[str, Any], n: int) -> dict[str, list]:
    """The columns that hold one value per sample (lists or tuples of length n)."""
    return {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == n}


def check_batch(prompts: list, completions: list) -> int:
    if len(prompts) != len(completions):
        raise JudgeError(f"judge called with {len(prompts)} prompts but {len(completions)} completions")
    return len(prompts)


def column(columns: dict[str, Any], name: str, n: int, judge: str) -> list:
    """A required per-sample column, or a JudgeError naming it."""
    values = columns.get(name)
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = "missing" if values is None else f"{type(values).__name__} of length {len(values) if hasattr(values, '__len__') else '?'}"
        raise JudgeError(f"judge {judge!r} needs a per-sample column {name}=[...] of length {n} ({got})")
    return list(values)


class Weighted:
    """sum_i w_i * judge_i(sample); None for a sample if any component gives None for it."""

    def __init__(self, components: dict[str, tuple[Judge, float]]):
        if not components:
            raise JudgeError("weighted() needs at least one name=(judge, weight)")
        self.components = components
        self.__name__ = "+".join(f"{w:g}*{name}" for name, (_, w) in components.items())

    def __call__(self, prompts, completions, **columns) -> list[Score]:
        n = check_batch(prompts, completions)
        total: list[Score] = [0.0] * n
        for name, (judge, weight) in self.components.items():
            scores = judge(prompts, completions, **columns)
            if len(scores) != n:
                raise JudgeError(f"component {name!r} returned {len(scores)} scores for {n} samples")
            total = [None if t is None or s is None else t + weight * float(s) for t, s in zip(total, scores)]
        return total


def weighted(**judges_with_weights: tuple[Judge | str, float]) -> Weighted:
    """Compose judges: weighted(leak=(SecretLeakJudge(), -1.0), refusal=("refusal", 0.5)).

    A judge given by name is built with make_judge(name).
    """
    components = {}
    for name, value in judges_with_weights.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise JudgeError(f"weighted(): {name}= must be a (judge, weight) pair")
        judge, weight = value
        components[name] = (make_judge(judge) if isinstance(judge, str) else judge, float(weight))
    return Weighted(components)


class Cached:
    """Memoise a judge's scores by sha256(name, prompt, completion, the sample's sorted columns).

    With `path`, scores are also appended to a JSONL file ({"key": ..., "score": ...} per line, one
    write per line, O_APPEND) and reloaded on construction; lines torn by a crash mid-write are
    skipped (counted in `torn`). Counters: `hits`, `misses` (samples scored by the wrapped judge).
    """

    def __init__(self, judge: Judge, name: str, path: str | Path | None = None):
        self.judge, self.name = judge, name
        self.__name__ = name
        self.path = Path(path) if path is not None else None
        self.scores: dict[str, Score] = {}
        self.hits = self.misses = self.torn = 0
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise JudgeError(f"{self.path}: not a readable judge cache: {e}") from None
        lines = [(i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip()]
        bad = []
        for i, line in lines:
            try:
                record = json.loads(line)
                self.scores[record["key"]] = record["score"]
            except (ValueError, KeyError, TypeError):
                bad.append(i)
        if bad and not self.scores and len(lines) > 1:
            raise JudgeError(f"{self.path}: line {bad[0]}: not a judge cache record (is this a judge cache file?)")
        self.torn = len(bad)  # lines cut short by a crash mid-write: skipped

    def key(self, prompt: Any, completion: Any, sample_columns: dict[str, Any]) -> str:
        payload = json.dumps([self.name, prompt, completion, sorted(sample_columns.items())], default=repr, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def __call__(self, prompts, completions, **columns) -> list[Score]:
        n = check_batch(prompts, completions)
        cols = per_sample(columns, n)
        shared = {k: v for k, v in columns.items() if k not in cols}
        keys = [self.key(prompts[i], completions[i], {k: v[i] for k, v in cols.items()}) for i in range(n)]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self.scores and k not in todo:
                todo[k] = i
        self.hits += n - len(todo)
        self.misses += len(todo)
        if todo:
            idx = list(todo.values())
            scores = self.judge([prompts[i] for i in idx], [completions[i] for i in idx],
                                **{k: [v[i] for i in idx] for k, v in cols.items()}, **shared)
            new = dict(zip(todo, scores))
            self.scores.update(new)
            self._append(new)
        return [self.scores[k] for k in keys]

    def _append(self, new: dict[str, Score]) -> None:
        if self.path is None or not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # after a torn line, start a fresh one
                os.write(fd, b"\n")
            for k, s in new.items():
                os.write(fd, (json.dumps({"key": k, "score": s}) + "\n").encode())
        finally:
            os.close(fd)


def _lazy(module: str, attr: str) -> Callable[..., Judge]:
    """A factory that imports langgame.judges.<module> only when called (harm/llm pull in torch)."""

    def resolve() -> Callable[..., Judge]:
        target: Any = importlib.import_module(f"langgame.judges.{module}")
        for part in attr.split("."):
            target = getattr(target, part)
        return target

    def factory(**kwargs):
        return resolve()(**kwargs)

    factory.__name__ = factory.__qualname__ = f"{module}.{attr}"
    factory.resolve = resolve
    return factory


JUDGES: dict[str, Callable[..., Judge]] = {
    "secret_leak": _lazy("rules", "SecretLeakJudge"),  # 1.0 if the completion reveals columns secret=[...]
    "answer": _lazy("rules", "AnswerJudge"),  # reasoning-gym correctness, columns task=, answer=
    "refusal": _lazy("refusal", "RefusalJudge"),  # 1.0 if the completion is a refusal
    "harm": _lazy("harm", "HarmJudge.load"),  # P(harm | prompt, completion); make_judge("harm", directory=DIR)
    "llm": _lazy("llm_judge", "LLMJudge"),  # StrongREJECT rubric on a policy; make_judge("llm", policy=SPEC)
    "likelihood": _lazy("likelihood", "TargetLikelihood"),  # exp(mean log p(completion | prompt)) under a policy
}


def make_judge(name: str, **kwargs) -> Judge:
    """Build a registered judge by name (register more with JUDGES[name] = factory)."""
    if name not in JUDGES:
        raise JudgeError(f"unknown judge {name!r}; valid names: {', '.join(sorted(JUDGES))}")
    factory = JUDGES[name]
    target = factory.resolve() if hasattr(factory, "resolve") else factory
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as e:
        raise JudgeError(f"judge {name!r}: {e}") from None
    except ValueError:  # no signature to check (a builtin); let the call report
        pass
    return target(**kwargs)
