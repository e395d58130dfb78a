"""Propose-solve (paper 4.8): does a learning proposer train a better solver than random tasks, and does the
identical-interest proposer collapse onto trivial tasks?

Arms (examples/propose_solve.yaml with these edits; one run per arm and seed, in --out/<arm>_seed<seed>):
  identical     proposer_reward identical (R1 = R2 = the solver's accuracy)
  learnability  the yaml (AZR: 1 - acc if acc > 0 else 0)
  edge          proposer_reward edge (R-Zero: min(acc, 1 - acc) minus the repetition penalty)
  uniform       no proposer policy: random tasks with 1..max_ops operations; only the solver learns
The initial solver is every run's step-0 evaluation. For each arm, mean ± std over seeds: the solver's accuracy on the
held-out tasks (eval/acc_ops<k>, the same tasks in every run) at the first and the last evaluation, and over the last
quarter of training the proposer's share of trivial tasks (at most one operation), of invalid replies and the mean
operation count. A run whose summary.json exists is reused; --overwrite reruns it. Prints one JSON object, then a
Markdown table; writes --out/results.json.

    .venv/bin/python benchmarks/propose_solve.py --smoke --out /tmp/propose_smoke   # end to end, tiny-random
    .venv/bin/python benchmarks/propose_solve.py --seeds 0 1 2 --out runs/propose_bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from langgame.config import RLConfig, load_yaml, validate
from langgame.metrics import read_metrics
from langgame.rl import train_rl

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "propose_solve.yaml"
ARMS = ("identical", "learnability", "edge", "uniform")


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = load_yaml(EXAMPLE)
    raw.update(seed=seed, run_dir=str(args.out / f"{arm}_seed{seed}"), threads=args.threads)
    for key in ("max_steps", "eval_every", "eval_scenarios", "scenarios_per_step"):
        raw[key] = getattr(args, key) or raw[key]
    for p in ("player1", "player2"):
        raw[p]["policy"] = {"model": args.model} if args.model else raw[p]["policy"]
    if arm == "uniform":
        raw["player1"] = {"policy": None}
        raw["learners"] = [2]
    else:
        raw["game"]["options"]["proposer_reward"] = arm
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def summarize(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "eval/accuracy" in r]
    train = [r for r in rows if "game/invalid" in r]
    tail = train[-max(1, len(train) // 4):]

    def accuracy(r: dict) -> dict:
        return {"all": r["eval/accuracy"], **{k[len("eval/"):]: v for k, v in r.items() if k.startswith("eval/acc_ops")}}

    return {"first": accuracy(evals[0]), "last": accuracy(evals[-1]),
            "proposer": {k: float(np.mean([r.get(f"game/{k}", np.nan) for r in tail])) for k in ("trivial", "invalid", "ops")}}


def stats(values: list[float]) -> dict:
    x = np.array(values, dtype=float)
    return {"mean": float(np.nanmean(x)), "std": float(np.nanstd(x, ddof=1)) if len(x) > 1 else 0.0, "n": len(x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-scenarios", type=int)
    parser.add_argument("--scenarios-per-step", type=int)
    parser.add_argument("--model", help="both players' model (default: the yaml's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/propose_bench"))
    parser.add_argument("--overwrite", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--report", action="store_true", help="train nothing: report the runs that finished")
    parser.add_argument("--smoke", action="store_true", help="tiny-random, 2 steps, 1 seed, 8 eval tasks")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.max_steps, args.eval_every, args.eval_scenarios, args.scenarios_per_step = "tiny-random", 2, 2, 8, 4
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, dict]] = {}
    for arm in args.arms:
        for seed in args.seeds:
            run_dir = args.out / f"{arm}_seed{seed}"
            if not args.report and (args.overwrite or not (run_dir / "summary.json").exists()):
                train_rl(config(arm, seed, args), overwrite=True, console=Console(stderr=True, quiet=True))
            if (run_dir / "summary.json").exists():
                runs.setdefault(arm, {})[seed] = summarize(run_dir)
                print(json.dumps({"arm": arm, "seed": seed, **runs[arm][seed]}), file=sys.stderr)
    keys = sorted({k for seeds in runs.values() for s in seeds.values() for k in s["last"]})
    results = {arm: {"first": {k: stats([s["first"].get(k, np.nan) for s in seeds.values()]) for k in keys},
                     "last": {k: stats([s["last"].get(k, np.nan) for s in seeds.values()]) for k in keys},
                     "proposer": {k: stats([s["proposer"][k] for s in seeds.values()]) for k in ("trivial", "invalid", "ops")}}
               for arm, seeds in runs.items()}
    (args.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    print(json.dumps(results))
    f = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
    print(f"\n| arm | seeds | {' | '.join(f'{k} first -> last' for k in keys)} | trivial | invalid | ops |\n|{'---|' * (len(keys) + 5)}")
    for arm, r in results.items():
        cells = " | ".join(f"{f(r['first'][k])} -> {f(r['last'][k])}" for k in keys)
        p = " | ".join(f(r["proposer"][k]) for k in ("trivial", "invalid", "ops"))
        print(f"| {arm} | {r['last']['all']['n']} | {cells} | {p} |")


if __name__ == "__main__":
    main()
