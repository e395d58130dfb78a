"""Judges (reward models) with the TRL reward-function shape: judge(prompts, completions, **columns) -> list[float | None].

    base       Judge protocol, weighted() composition, Cached, JUDGES registry, make_judge, JudgeError
    rules      leaks / SecretLeakJudge (secret leakage under obfuscation), AnswerJudge (reasoning-gym)
    refusal    RefusalJudge (garak refusal strings), evaluate_refusal (pyrit labels)
    harm       learned HarmJudge: MiniLM embeddings + MLP head; train_harm_judge
    llm_judge  LLMJudge: StrongREJECT rubric on any policy; validate
    likelihood TargetLikelihood: a fixed model's probability of a target reply (GCG's target loss)
    labelled   pyrit's human-labelled rows, split, binary_metrics
    cli        `langgame judge train|eval` (add_commands)

Heavy modules (harm, llm_judge, likelihood) import torch/transformers; import them directly or use make_judge.
"""

from langgame.judges.base import JUDGES, Cached, Judge, JudgeError, Weighted, make_judge, weighted
from langgame.judges.refusal import RefusalJudge, evaluate_refusal
from langgame.judges.rules import AnswerJudge, SecretLeakJudge, extract_answer, leaks

__all__ = [
    "JUDGES", "AnswerJudge", "Cached", "Judge", "JudgeError", "RefusalJudge", "SecretLeakJudge", "Weighted",
    "evaluate_refusal", "extract_answer", "leaks", "make_judge", "weighted",
]
