"""Attacker diversity (GPO): how much an attack repeats the attacker's own past attacks.

Without a diversity term an adversarial attacker collapses onto one prompt. The penalty of an
attack is a weighted mean of Self-BLEU (sacrebleu's sentence BLEU of the attack against the
window of past attacks, / 100) and the mean MiniLM cosine similarity to that window, both in
[0, 1]. The window is bounded (the `window` most recent training attacks) and is part of the
run's state, so a resumed run continues with the same history.
"""

from __future__ import annotations

from collections import deque

import sacrebleu

from langgame.judges.base import check_batch, text_of
from langgame.judges.harm import Embedder


def self_bleu(texts: list[str]) -> float:
    """Mean over texts of BLEU(text, all the others) / 100: 1 = the batch repeats itself. NaN below 2 texts."""
    if len(texts) < 2:
        return float("nan")
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1 :]).score / 100 for i, t in enumerate(texts)]
    return sum(scores) / len(scores)


def embedding_similarity(texts: list[str], embed: Embedder) -> float:
    """Mean pairwise cosine similarity of the texts' MiniLM embeddings. NaN below 2 texts."""
    if len(texts) < 2:
        return float("nan")
    e = embed(texts)
    sim = e @ e.T
    n = len(texts)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


class DiversityPenalty:
    """penalty(attack) = bleu_weight * BLEU(attack, window) + embedding_weight * mean cos(attack, window), in [0, 1]."""

    def __init__(self, window: int = 256, bleu_weight: float = 0.5, embedding_weight: float = 0.5, embed: Embedder | None = None):
        self.window: deque[str] = deque(maxlen=window)
        self.bleu_weight, self.embedding_weight = bleu_weight, embedding_weight
        self.embed = embed or Embedder()
        self.__name__ = "diversity_penalty"

    def __call__(self, prompts, completions, **columns) -> list[float]:
        n = check_batch(prompts, completions)
        if not self.window or n == 0:
            return [0.0] * n
        texts, past = [text_of(c) for c in completions], list(self.window)
        bleu = [sacrebleu.sentence_bleu(t, past).score / 100 for t in texts]
        cos = (self.embed(texts) @ self.embed(past).T).mean(-1).clamp(min=0.0)
        return [self.bleu_weight * b + self.embedding_weight * float(c) for b, c in zip(bleu, cos)]

    def update(self, attacks: list[str]) -> None:
        self.window.extend(attacks)

    def state_dict(self) -> dict:
        return {"window": list(self.window)}

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state["window"])

