"""Unlearning as a zero-sum game vs gradient ascent + KL: which defender forgets, keeps, and resists extraction and relearning?

Per seed (the seed of every run and of the invented facts), in --out/seed<seed>/: write the facts' episodes
(games/unlearn.write_data), teach the model all of them (examples/unlearn_teach.yaml), then unlearn from the
taught defender with each arm:
  taught           no unlearning (the reference)
  gradient_ascent  examples/unlearn_gradient_ascent.yaml (Yao et al. 2023 in the one objective)
  idk              refusal fine-tuning: SFT on the forget facts answered "I don't know." and the retain facts answered
  game_scripted    the game with the defender alone learning, against the scripted attacker (learners [2])
  game             the game with attacker and defender both learning (examples/unlearn.yaml)
and measure each defender:
  p_<forget|retain>_<direct|paraphrase>  its exact answer probabilities (taught question / held-out paraphrases)
  p_idk_<forget|retain>_direct           its exact probability of "I don't know." instead
  attack   a fresh attacker trained --attack-steps against the frozen defender (its shaping scored by that
           defender): sampled leak before -> after; retain accuracy, refusal of forget facts and over-refusal
           (retain facts answered / refused or "I don't know") at the start
  relearn  --relearn-steps of SFT on the first half of the forget facts, then p_forget of the other half
The refusal game: --n-unknown N also teaches N towns with no fact answered "I don't know." (so the taught
defender can refuse) and --refusal-reward R pays the defender R for refusing a forget fact (games/unlearn.py).
A run whose summary.json exists is reused, an arm already measured (--out/seed<seed>/<arm>.json) too (a column
added since is left out of that row's mean); --out/seed<seed>/facts.json records the facts and rewards, and
other values need another --out. Runs keep no checkpoints, and only the defenders keep their final weights;
--overwrite reruns. Prints one JSON object, then a Markdown table; writes --out/results.json.

    .venv/bin/python benchmarks/unlearn.py --smoke --out /tmp/unlearn_smoke   # end to end on tiny-random models
    .venv/bin/python benchmarks/unlearn.py --seeds 0 1 2 --out runs/unlearn_bench
    .venv/bin/python benchmarks/unlearn.py --seeds 0 1 2 --n-unknown 10 --refusal-reward 1 --out runs/unlearn_refusal_bench
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console

from arms import fmt, stats
from langgame.config import STAGES, load_yaml, validate
from langgame.games.unlearn import IDK, answer_probability, facts, write_data
from langgame.loop import drive
from langgame.models import load_policy
from langgame.rl import RLRun
from langgame.train import BCRun

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ARMS = ("taught", "gradient_ascent", "idk", "game_scripted", "game")
SMOKE = {"model": "tiny-random", "seeds": [0], "n_forget": 2, "n_retain": 2, "teach_steps": 2, "unlearn_steps": 1,
         "attack_steps": 1, "relearn_steps": 1, "eval_scenarios": 4, "scenarios_per_step": 2}


def train_once(raw: dict, run_dir: Path, args: argparse.Namespace, keep_final: bool = True) -> Path:
    """Train raw (a `langgame train` config) in run_dir unless it finished before; returns run_dir. To fit a disk
    (a SmolLM2 checkpoint with its optimizer is 1.6 GB) it saves only at the end and then deletes its checkpoints
    and, unless keep_final, its final policy: metrics.jsonl and summary.json stay."""
    raw = {**raw, "run_dir": str(run_dir), "threads": args.threads, "save_every": 0, "keep_checkpoints": 1}
    if args.overwrite or not (run_dir / "summary.json").is_file():
        cfg = validate(STAGES[raw["stage"]], raw, str(run_dir))
        drive(RLRun if raw["stage"] == "rl" else BCRun, cfg, overwrite=True, console=Console(stderr=True, quiet=True))
    prune(run_dir, keep_final)
    return run_dir


def prune(run_dir: Path, keep_final: bool) -> None:
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if not keep_final:
        shutil.rmtree(run_dir / "final", ignore_errors=True)


def configs(seed: int, data: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    """The examples with this seed, model, data, facts and step counts."""
    teach, ga, game = (load_yaml(EXAMPLES / f"{name}.yaml") for name in ("unlearn_teach", "unlearn_gradient_ascent", "unlearn"))
    teach.update(seed=seed, policy={**teach["policy"], "model": args.model}, max_steps=args.teach_steps or teach["max_steps"],
                 data={**teach["data"], "train": str(data["teach"]), "eval": str(data["teach_eval"])})
    ga.update(seed=seed, max_steps=args.unlearn_steps or ga["max_steps"],
              data={**ga["data"], "train": str(data["gradient_ascent"]), "eval": str(data["teach_eval"])})
    idk = {**teach, "max_steps": ga["max_steps"], "data": {**teach["data"], "train": str(data["idk"])}}  # as many steps as ascent
    game.update(seed=seed, max_steps=args.unlearn_steps or game["max_steps"])
    for key in ("eval_scenarios", "scenarios_per_step"):
        game[key] = getattr(args, key) or game[key]
    game["game"]["options"].update(n_forget=args.n_forget, n_retain=args.n_retain, fact_seed=seed, refusal_reward=args.refusal_reward)
    game["player1"]["policy"]["model"] = args.model
    return {"teach": teach, "gradient_ascent": ga, "idk": idk, "game": game}


def with_defender(raw: dict, defender: Path, **update) -> dict:
    """A copy of raw whose (fixed or learning) player 2 starts from `defender`."""
    raw = copy.deepcopy(raw)
    key = "policy" if raw["stage"] == "sft" else "player2"
    if key == "policy":
        raw["policy"] = {**raw["policy"], "model": str(defender)}
    else:
        raw["player2"]["policy"]["model"] = str(defender)
    raw.update(update)
    return raw


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, dict]:
    root = args.out / f"seed{seed}"
    setting = {k: getattr(args, k) for k in ("model", "n_forget", "n_retain", "n_unknown", "refusal_reward")}
    recorded = root / "facts.json"
    if recorded.is_file() and not args.overwrite and json.loads(recorded.read_text()) != setting:
        sys.exit(f"{recorded}: this --out was measured with {recorded.read_text().strip()}; use another --out or --overwrite")
    root.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(setting))
    data = write_data(root / "data", args.n_forget, args.n_retain, seed, args.n_unknown)
    cfg = configs(seed, data, args)
    taught = train_once(cfg["teach"], root / "teach", args) / "final"
    game = with_defender(cfg["game"], taught)
    game["game"]["options"]["likelihood_model"] = str(taught)
    scripted = with_defender(game, taught, learners=[2])
    scripted["player1"]["policy"] = None
    scripted["game"]["options"]["likelihood_coef"] = 0.0
    defenders = {  # each trained when an arm needs it
        "taught": lambda: taught,
        "gradient_ascent": lambda: train_once(with_defender(cfg["gradient_ascent"], taught), root / "gradient_ascent", args) / "final",
        "idk": lambda: train_once(with_defender(cfg["idk"], taught), root / "idk", args) / "final",
        "game_scripted": lambda: train_once(scripted, root / "game_scripted", args) / "final",
        "game": lambda: train_once(game, root / "game", args) / "final" / "player2",
    }
    f = facts(args.n_forget, args.n_retain, seed)
    held_out = f["forget"][args.n_forget // 2 :]  # relearning never sees these
    out = {}
    for arm in args.arms:
        measured = root / f"{arm}.json"  # the arm's row: its attack and relearning runs keep no weights
        if measured.is_file() and not args.overwrite:
            out[arm] = json.loads(measured.read_text())
            continue
        defender = defenders[arm]()
        policy = load_policy(str(defender))
        row = {f"p_{kind}_{k}": v for kind in ("forget", "retain") for k, v in answer_probability(policy, f[kind]).items()}
        row.update({f"p_idk_{kind}_direct": answer_probability(policy, [{**x, "answer": IDK} for x in f[kind]])["direct"]
                    for kind in ("forget", "retain")})
        attack = with_defender(game, defender, learners=[1], max_steps=args.attack_steps, eval_every=0, save_every=0)
        attack["game"]["options"]["likelihood_model"] = str(defender)
        summary = json.loads((train_once(attack, root / f"{arm}_attack", args, keep_final=False) / "summary.json").read_text())
        first, last = summary["eval_first"], summary["eval_last"]
        row.update({k: first[f"eval/{k}"] for k in ("retain_accuracy", "retain_refusal", "forget_refusal", "leak_direct", "leak_paraphrase")},
                   leak_before=first["eval/leak"], leak_after_attack=last["eval/leak"])
        relearn = with_defender(cfg["teach"], defender, max_steps=args.relearn_steps, eval_every=0,
                                data={**cfg["teach"]["data"], "train": str(data["relearn"])})
        relearned = train_once(relearn, root / f"{arm}_relearn", args)
        row["p_held_out_forget"] = answer_probability(policy, held_out)["direct"]
        row["p_held_out_forget_relearned"] = answer_probability(load_policy(str(relearned / "final")), held_out)["direct"]
        prune(relearned, keep_final=False)
        measured.write_text(json.dumps(row))
        out[arm] = row
        print(json.dumps({"seed": seed, "arm": arm, **row}), file=sys.stderr, flush=True)
    return out


COLUMNS = ("p_forget_direct", "p_forget_paraphrase", "p_retain_direct", "p_retain_paraphrase", "retain_accuracy",
           "retain_refusal", "leak_before", "leak_after_attack", "p_held_out_forget", "p_held_out_forget_relearned",
           "p_idk_forget_direct", "p_idk_retain_direct", "forget_refusal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the defender before teaching, and the attacker")
    parser.add_argument("--n-forget", type=int, default=10)
    parser.add_argument("--n-retain", type=int, default=10)
    parser.add_argument("--n-unknown", type=int, default=0, help="towns with no fact taught to answer \"I don't know.\"")
    parser.add_argument("--refusal-reward", type=float, default=0.0, help="the game's refusal_reward (the defender's, for refusing a forget fact)")
    parser.add_argument("--teach-steps", type=int, help="default: examples/unlearn_teach.yaml's")
    parser.add_argument("--unlearn-steps", type=int, help="steps of every unlearning arm; default: each example's")
    parser.add_argument("--attack-steps", type=int, default=10, help="steps of the fresh attacker against each frozen defender")
    parser.add_argument("--relearn-steps", type=int, default=10)
    parser.add_argument("--eval-scenarios", type=int, help="game runs; default: examples/unlearn.yaml's")
    parser.add_argument("--scenarios-per-step", type=int, help="game runs; default: examples/unlearn.yaml's")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/unlearn_bench"))
    parser.add_argument("--overwrite", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--smoke", action="store_true", help="tiny-random models, 1 seed, 2 facts each, 1-2 steps per run")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    runs = {seed: one_seed(seed, args) for seed in args.seeds}
    arms = {arm: {k: stats([runs[s][arm][k] for s in runs if k in runs[s][arm]]) for k in COLUMNS} for arm in args.arms}
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "arms": arms, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    print(f"| arm (seeds {', '.join(map(str, args.seeds))}) | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for arm, a in arms.items():
        print(f"| {arm} | " + " | ".join(f"{fmt(a[k])} (n={a[k]['n']})" if a[k]["n"] < len(args.seeds) else fmt(a[k]) for k in COLUMNS) + " |")


if __name__ == "__main__":
    main()
