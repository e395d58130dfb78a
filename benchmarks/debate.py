"""Debate (paper 5.2): does a frozen judge pick the right answer more often after a debate, and does training the
debaters help it or hack it?

Arms (examples/debate.yaml with these edits; one run per arm and seed, in --out/<arm>_seed<seed>):
  debate        the yaml: two debaters, both learning
  consultancy   game.options.format=consultancy: one consultant (player 1), right half of the time, learning
On the held-out questions (eval split, the same in every run), mean ± std over seeds: the judge's accuracy without a
transcript (naive judging), and with the transcript at the first evaluation (untrained debaters / consultant) and the
last (trained); 1 - accuracy is the wrong side's win rate, whose rise would be judge hacking. A run whose
summary.json exists is reused; --overwrite reruns it. Prints one JSON object, then a Markdown table; writes
--out/results.json.

    .venv/bin/python benchmarks/debate.py --smoke --out /tmp/debate_smoke   # end to end, tiny-random players and judge
    .venv/bin/python benchmarks/debate.py --seeds 0 1 2 --out runs/debate_bench
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

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "debate.yaml"
ARMS = ("debate", "consultancy")
KEYS = ("naive_accuracy", "judge_accuracy", "judge_p_right")


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = load_yaml(EXAMPLE)
    raw.update(seed=seed, run_dir=str(args.out / f"{arm}_seed{seed}"), threads=args.threads)
    for key in ("max_steps", "eval_every", "eval_scenarios", "scenarios_per_step"):
        raw[key] = getattr(args, key) or raw[key]
    if args.model:
        for p in ("player1", "player2"):
            raw[p]["policy"] = {"model": args.model}
        raw["game"]["options"]["judge_model"] = args.model
    raw["game"]["options"]["format"] = arm
    if arm == "consultancy":
        raw["learners"] = [1]
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def summarize(run_dir: Path) -> dict:
    evals = [r for r in read_metrics(run_dir) if "eval/judge_accuracy" in r]
    return {when: {k: r[f"eval/{k}"] for k in KEYS} | {"step": r["step"]} for when, r in (("first", evals[0]), ("last", evals[-1]))}


def stats(values: list[float]) -> dict:
    x = np.array(values, dtype=float)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "n": len(x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-scenarios", type=int)
    parser.add_argument("--scenarios-per-step", type=int)
    parser.add_argument("--model", help="the debaters' and the judge's model (default: the yaml's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/debate_bench"))
    parser.add_argument("--overwrite", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--report", action="store_true", help="train nothing: report the runs that finished")
    parser.add_argument("--smoke", action="store_true", help="tiny-random, 2 steps, 1 seed, 8 eval questions")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.max_steps, args.eval_every, args.eval_scenarios, args.scenarios_per_step = "tiny-random", 2, 2, 8, 2
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
    results = {arm: {when: {k: stats([s[when][k] for s in seeds.values()]) for k in KEYS} for when in ("first", "last")}
               for arm, seeds in runs.items()}
    (args.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    print(json.dumps(results))
    f = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
    print("\n| arm | seeds | naive judging | judge accuracy, untrained | trained | p(right), untrained | trained |\n|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {r['last']['judge_accuracy']['n']} | {f(r['first']['naive_accuracy'])} | {f(r['first']['judge_accuracy'])} "
              f"| {f(r['last']['judge_accuracy'])} | {f(r['first']['judge_p_right'])} | {f(r['last']['judge_p_right'])} |")


if __name__ == "__main__":
    main()
