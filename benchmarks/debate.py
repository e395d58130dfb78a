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
from pathlib import Path

from arms import add_arguments, base_config, fmt, run_arms, stats
from langgame.config import RLConfig, validate
from langgame.metrics import read_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "debate.yaml"
ARMS = ("debate", "consultancy")
KEYS = ("naive_accuracy", "judge_accuracy", "judge_p_right")


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = base_config(EXAMPLE, arm, seed, args)
    if args.model:
        for p in ("player1", "player2"):
            raw[p]["policy"] = {"model": args.model}
        raw["game"]["options"]["judge_model"] = args.model
    raw["game"]["options"]["format"] = arm
    raw["eval_initial"] = False  # the judge's accuracy is of the current debaters; a third of the evaluation cost
    if arm == "consultancy":
        raw["learners"] = [1]
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def summarize(arm: str, run_dir: Path) -> dict:
    evals = [r for r in read_metrics(run_dir) if "eval/judge_accuracy" in r]
    return {when: {k: r[f"eval/{k}"] for k in KEYS} | {"step": r["step"]} for when, r in (("first", evals[0]), ("last", evals[-1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--model", help="the debaters' and the judge's model (default: the yaml's)")
    add_arguments(parser, "runs/debate_bench")
    parser.add_argument("--smoke", action="store_true", help="tiny-random, 2 steps, 1 seed, 8 eval questions")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.max_steps, args.eval_every, args.eval_scenarios, args.scenarios_per_step = "tiny-random", 2, 2, 8, 2
    runs = run_arms(args.arms, args, config, summarize)
    results = {arm: {when: {k: stats([s[when][k] for s in seeds.values()]) for k in KEYS} for when in ("first", "last")}
               for arm, seeds in runs.items()}
    (args.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    print(json.dumps(results))
    f = fmt
    print("\n| arm | seeds | naive judging | judge accuracy, untrained | trained | p(right), untrained | trained |\n|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {r['last']['judge_accuracy']['n']} | {f(r['first']['naive_accuracy'])} | {f(r['first']['judge_accuracy'])} "
              f"| {f(r['last']['judge_accuracy'])} | {f(r['first']['judge_p_right'])} | {f(r['last']['judge_p_right'])} |")


if __name__ == "__main__":
    main()
