"""Propose-solve (paper 4.8): does a learning proposer train a better solver than random tasks, and does the
identical-interest proposer collapse onto trivial tasks?

Arms (examples/propose_solve.yaml with these edits; one run per arm and seed, in --out/<arm>_seed<seed>):
  identical     proposer_reward identical (R1 = R2 = the solver's accuracy)
  learnability  the yaml (AZR: 1 - acc if acc > 0 else 0)
  edge          proposer_reward edge (R-Zero: min(acc, 1 - acc) minus the repetition penalty)
  uniform       no proposer policy: random tasks with 1..max_ops operations; only the solver learns
The initial solver is every run's step-0 evaluation. For each arm, mean ± std over seeds: the solver's accuracy on the
held-out tasks (eval/acc_ops<k>, the same tasks in every run) at the first and the last evaluation, and over the first
and the last quarter of training the proposer's share of trivial tasks (at most one operation), of invalid replies, of
tasks repeated within a step, the mean operation count and the solver's accuracy on those training tasks. A run whose
summary.json exists is reused; --overwrite reruns it. Prints one JSON object, then a Markdown table; writes
--out/results.json.

    .venv/bin/python benchmarks/propose_solve.py --smoke --out /tmp/propose_smoke   # end to end, tiny-random
    .venv/bin/python benchmarks/propose_solve.py --seeds 0 1 2 --out runs/propose_bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from arms import add_arguments, base_config, fmt, run_arms, stats
from langgame.config import RLConfig, validate
from langgame.metrics import read_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "propose_solve.yaml"
ARMS = ("identical", "learnability", "edge", "uniform")
PROPOSER = ("trivial", "invalid", "ops", "repeated", "accuracy")  # game metrics of the proposer's training tasks


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = base_config(EXAMPLE, arm, seed, args)
    for p in ("player1", "player2"):
        raw[p]["policy"] = {"model": args.model} if args.model else raw[p]["policy"]
    if arm == "uniform":
        raw["player1"] = {"policy": None}
        raw["learners"] = [2]
    else:
        raw["game"]["options"]["proposer_reward"] = arm
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def summarize(arm: str, run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "eval/accuracy" in r]
    train = [r for r in rows if "game/invalid" in r]
    quarter = max(1, len(train) // 4)

    def accuracy(r: dict) -> dict:
        return {"all": r["eval/accuracy"], **{k[len("eval/"):]: v for k, v in r.items() if k.startswith("eval/acc_ops")}}

    return {"first": accuracy(evals[0]), "last": accuracy(evals[-1]),
            "proposer": {k: {when: float(np.nanmean([r.get(f"game/{k}", np.nan) for r in part] or [np.nan]))
                             for when, part in (("first", train[:quarter]), ("last", train[-quarter:]))}
                         for k in PROPOSER}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--model", help="both players' model (default: the yaml's)")
    add_arguments(parser, "runs/propose_bench")
    parser.add_argument("--smoke", action="store_true", help="tiny-random, 2 steps, 1 seed, 8 eval tasks")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.max_steps, args.eval_every, args.eval_scenarios, args.scenarios_per_step = "tiny-random", 2, 2, 8, 4
    runs = run_arms(args.arms, args, config, summarize)
    keys = sorted({k for seeds in runs.values() for s in seeds.values() for k in s["last"]})
    results = {arm: {"first": {k: stats([s["first"].get(k, np.nan) for s in seeds.values()]) for k in keys},
                     "last": {k: stats([s["last"].get(k, np.nan) for s in seeds.values()]) for k in keys},
                     "proposer": {k: {when: stats([s["proposer"][k][when] for s in seeds.values()]) for when in ("first", "last")}
                                  for k in PROPOSER}}
               for arm, seeds in runs.items()}
    (args.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    print(json.dumps(results))
    f = fmt
    columns = [*keys, *(f"proposer {k}" for k in PROPOSER)]
    print(f"\n| arm | seeds | {' | '.join(f'{k} first -> last' for k in columns)} |\n|{'---|' * (len(columns) + 2)}")
    for arm, r in results.items():
        cells = " | ".join(f"{f(r['first'][k])} -> {f(r['last'][k])}" for k in keys)
        p = " | ".join(f"{f(r['proposer'][k]['first'])} -> {f(r['proposer'][k]['last'])}" for k in PROPOSER)
        print(f"| {arm} | {r['last']['all']['n']} | {cells} | {p} |")


if __name__ == "__main__":
    main()
