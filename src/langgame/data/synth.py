"""Procedurally generated game logs: multi-turn question-answer dialogues with checkable answers.

Player 1 asks questions drawn from seeded `reasoning-gym` generators; player 2 answers in a fixed
format, optionally after a worked reasoning segment (a Q-C-A log, paper section 5.1). Each
reasoning segment is derived from the task's metadata and checked against reasoning-gym's answer.
Episode.meta holds the tasks and answers, so answers can be scored later (`score`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from functools import reduce

import reasoning_gym

from langgame.game import Episode, Payoff, Turn

SYSTEM = "You are a careful assistant. Work the problem out, then give the answer."


def _chain_sum(meta: dict) -> tuple[str, str]:
    tokens = re.findall(r"[+-]|\d+", meta["expression"])
    total, steps, sign = None, [], 1
    for tok in tokens:
        if tok in "+-":
            sign = 1 if tok == "+" else -1
            continue
        value = sign * int(tok)
        if total is None:
            total = value
        else:
            steps.append(f"{total} {'+' if value >= 0 else '-'} {abs(value)} = {total + value}")
            total += value
    return ". ".join(steps) + ".", str(total)


def _spell_backward(meta: dict) -> tuple[str, str]:
    word = meta["word"]
    return f"Letters: {' '.join(word)}. Reversed: {' '.join(reversed(word))}.", word[::-1]


def _letter_counting(meta: dict) -> tuple[str, str]:
    letter = meta["target_letter"]
    counts = [(w, w.lower().count(letter)) for w in meta["span"]]
    total = sum(c for _, c in counts)
    return ", ".join(f"{w} {c}" for w, c in counts) + f". Total: {total}.", str(total)


def _gcd(meta: dict) -> tuple[str, str]:
    steps = []

    def euclid(a: int, b: int) -> int:
        while b:
            steps.append(f"{a} = {a // b} x {b} + {a % b}")
            a, b = b, a % b
        return a

    g = reduce(euclid, meta["numbers"])
    return "; ".join(steps) + f". GCD: {g}.", str(g)


def _lcm(meta: dict) -> tuple[str, str]:
    steps = []

    def lcm(a: int, b: int) -> int:
        g = math.gcd(a, b)
        steps.append(f"gcd({a}, {b}) = {g}, lcm = {a} x {b} / {g} = {a * b // g}")
        return a * b // g

    value = reduce(lcm, meta["numbers"])
    return "; ".join(steps) + ".", str(value)


REASONERS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "chain_sum": _chain_sum,
    "spell_backward": _spell_backward,
    "letter_counting": _letter_counting,
    "gcd": _gcd,
    "lcm": _lcm,
}


def answer_text(answer: str) -> str:
    return f"The answer is {answer}."


def score(task: str, response: str, entry: dict) -> float:
    """reasoning-gym's own score of a response's final answer (the text after 'The answer is')."""
    match = re.search(r"The answer is (.+?)\.?\s*$", response.strip())
    return reasoning_gym.get_score_answer_fn(task)(match.group(1) if match else None, entry)


def synth_episodes(n: int, seed: int, turns: int = 2, thoughts: bool = True, tasks: list[str] | None = None) -> list[Episode]:
    """n episodes of `turns` question-answer rounds each, mixing tasks; deterministic in seed."""
    tasks = tasks or list(REASONERS)
    unknown = sorted(set(tasks) - set(REASONERS))
    if unknown:
        raise ValueError(f"unknown synth tasks {unknown}; available: {', '.join(REASONERS)}")
    pools = {t: iter(reasoning_gym.create_dataset(t, size=n * turns, seed=seed * 1009 + i)) for i, t in enumerate(tasks)}
    pick = random.Random(seed)
    episodes = []
    for k in range(n):
        history, answers, names = [Turn(0, SYSTEM)], [], []
        for _ in range(turns):
            task = pick.choice(tasks)
            item = next(pools[task])
            thought, answer = REASONERS[task](item["metadata"])
            if answer != str(item["answer"]):
                raise AssertionError(f"{task}: derived answer {answer!r} != reasoning-gym's {item['answer']!r}")
            history += [Turn(1, item["question"]), Turn(2, answer_text(answer), thought if thoughts else None)]
            answers.append(answer)
            names.append(task)
        episodes.append(
            Episode(history, Payoff.IDENTICAL_INTEREST, id=f"synth-{seed}-{k}", game="qa_synth", source=f"synth:seed={seed}",
                    meta={"tasks": names, "answers": answers})
        )
    return episodes
