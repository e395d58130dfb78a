"""What policy.gradient_checkpointing buys: peak memory and time of one learner update with and without it.

Workload: the BabyAI teacher's update in examples/babyai_teacher_student.yaml, one micro-batch of --rows
teacher chats (every hint's scene description and the hint itself; the student here takes random actions, so
episodes are long, as early in training) on the shipped SmolLM2-135M-Instruct (fp32 weights, bf16 autocast):
forward + backward of log pi on the hint tokens. Each mode runs in a fresh process; its memory is the rise of
the resident set's peak (VmHWM, reset after loading) over the resident set before the update, so the model's
weights are not counted. Prints one JSON object, then a Markdown table.

    .venv/bin/python benchmarks/grad_checkpointing.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from langgame.config import PolicyConfig
from langgame.games.babyai import BabyAIGame, oracle_chats
from langgame.models import load_policy
from langgame.objective import collate, policy_forward

MODES = {"kept": False, "recomputed": True}


def teacher_rows(policy, rows: int):
    """`rows` teacher chats of finished episodes: BabyAIBot's action as each hint, a student moving at random."""
    chats = oracle_chats(BabyAIGame.Options(hint_every=8), rows, "train", seed=0, explore=1.0)
    return collate([policy.render(chat, 1) for chat in chats], policy.tokenizer.pad_token_id)


def kib(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


def measure(mode: str, rows: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    policy = load_policy(PolicyConfig(model="smollm2-135m-instruct", compute_dtype="bfloat16", gradient_checkpointing=MODES[mode]))
    batch = teacher_rows(policy, rows)
    where = batch.owner == 1
    policy.model.train()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = kib("VmRSS")
    start = time.perf_counter()
    with policy.autocast():
        out = policy_forward(policy.model, batch.ids, batch.attention, where)
    out.logp.sum().backward()
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "peak_extra_mb": (kib("VmHWM") - before) / 1024, "rows": rows,
            "tokens": int(batch.attention.sum()), "width": batch.ids.shape[1], "scored_tokens": int(where.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=16, help="teacher chats in the micro-batch (the example: 16 episodes a step)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in this process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.rows, args.threads)))
        return
    results = {}
    for mode in MODES:
        run = subprocess.run([sys.executable, __file__, "--mode", mode, "--rows", str(args.rows), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    results["threads"] = args.threads
    print(json.dumps(results))
    kept = results["kept"]
    print(f"{kept['rows']} rows, {kept['tokens']} tokens ({kept['scored_tokens']} scored), padded width {kept['width']}\n")
    print("| gradient_checkpointing | peak memory of the update (MB) | forward + backward (s) |\n|---|---|---|")
    for mode in MODES:
        r = results[mode]
        print(f"| {str(MODES[mode]).lower()} | {r['peak_extra_mb']:.0f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
