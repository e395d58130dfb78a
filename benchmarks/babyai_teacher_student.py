"""BabyAI teacher/student: does an LLM teacher speed up a PPO student, and does the teacher learn too?

Arms (examples/babyai_teacher_student.yaml with these edits; one run per arm and seed, in --out/<arm>_seed<seed>):
  alone     the PPO student alone (game.options.hint_every=0, player1.policy=null, learners=[2])
  frozen    a frozen LLM teacher (learners=[2])
  learning  the LLM teacher learns by REINFORCE from the student's return (learners=[1, 2]: the yaml as is)
  oracle    the scripted teacher, minigrid's BabyAIBot (player1.policy=null, learners=[2])
  frozen_sft, learning_sft  frozen and learning with a teacher first cloned on BabyAIBot's hints (examples/
            babyai_teacher_sft.yaml on `langgame data babyai`'s chats, written to --out/teacher_data; one teacher,
            --out/teacher_sft, trained once with the yaml's seed and reused by every seed)
  learning_sft_kl  learning_sft with KL(teacher || cloned teacher) in the teacher's loss (player1.algo.kl_coef =
            --teacher-kl, k3)
--teacher-lr and --teacher-algo set the learning arms' teacher learning rate and rule (ppo: a value head on the teacher, GAE
over its hints); use another --out for them: a run's directory names its arm and seed only.
Every run trains --max-steps steps; the student's environment frames are measured (the sum of game/frames
over the training steps), not budgeted. A run whose summary.json exists is reused; a run cut short resumes from
its last checkpoint (it restarts if its config changed); --overwrite reruns it. Prints one JSON object, then a Markdown table;
writes --out/results.json and --out/success_vs_frames.png.

    .venv/bin/python benchmarks/babyai_teacher_student.py --smoke --out /tmp/babyai_smoke   # end to end, tiny-random teacher
    .venv/bin/python benchmarks/babyai_teacher_student.py --seeds 0 1 2 --out runs/babyai_bench
    .venv/bin/python benchmarks/babyai_teacher_student.py --arms frozen_sft learning_sft --seeds 0 1 2 --out runs/babyai_bench
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arms import finish, run_arms
from langgame.config import RLConfig, TrainConfig, load_yaml, validate
from langgame.games.babyai import BabyAIGame, write_data
from langgame.metrics import read_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "babyai_teacher_student.yaml"
SFT_EXAMPLE = EXAMPLE.with_name("babyai_teacher_sft.yaml")
ARMS = ("alone", "frozen", "learning", "oracle", "frozen_sft", "learning_sft", "learning_sft_kl")
SMOKE = {"teacher": "tiny-random", "seeds": [0], "max_steps": 2, "eval_scenarios": 8, "scenarios_per_step": 2, "sft_steps": 2}


def game_options(args: argparse.Namespace) -> dict:
    options = load_yaml(EXAMPLE)["game"]["options"]
    return options | {k: v for k, v in (("level", args.level), ("hint_every", args.hint_every)) if v is not None}


def sft_teacher(args: argparse.Namespace) -> Path:
    """The *_sft arms' teacher: --teacher cloned on BabyAIBot's hints in this level (examples/babyai_teacher_sft.yaml);
    trained once, in --out/teacher_sft, unless it finished before. Returns its final policy."""
    run_dir = args.out / "teacher_sft"
    if not (run_dir / "summary.json").exists():
        options = validate(BabyAIGame.Options, game_options(args), f"{EXAMPLE}: game.options")
        data = write_data(args.out / "teacher_data", options)
        raw = load_yaml(SFT_EXAMPLE)
        raw.update(run_dir=str(run_dir), threads=args.threads, max_steps=args.sft_steps or raw["max_steps"])
        raw["policy"]["model"] = args.teacher
        raw["data"].update(train=str(data["hints"]), eval=str(data["hints_eval"]))
        finish(validate(TrainConfig, raw, str(SFT_EXAMPLE)))
    return run_dir / "final"


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = load_yaml(EXAMPLE)
    raw.update(seed=seed, run_dir=str(args.out / f"{arm}_seed{seed}"), threads=args.threads)
    for key in ("max_steps", "eval_every", "eval_scenarios", "scenarios_per_step"):
        raw[key] = getattr(args, key) or raw[key]
    raw["game"]["options"] = game_options(args)
    raw["player1"]["policy"]["model"] = str(sft_teacher(args)) if "_sft" in arm else args.teacher
    raw["eval_initial"] = False  # the table and plot read the current profile's evaluation only
    if arm.endswith("_kl"):
        raw["player1"]["algo"]["kl_coef"] = args.teacher_kl
    if arm.startswith("learning"):
        raw["player1"]["optim"]["lr"] = args.teacher_lr or raw["player1"]["optim"]["lr"]
        raw["player1"]["algo"]["name"] = args.teacher_algo or raw["player1"]["algo"]["name"]
    else:
        raw["learners"] = [2]
    if arm in ("alone", "oracle"):
        raw["player1"]["policy"] = None
    if arm == "alone":
        raw["game"]["options"]["hint_every"] = 0
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def clean(x: float | None) -> float | None:
    """NaN (e.g. hint agreement where the bot had no plan) as None, so that the JSON stays valid."""
    return None if x is None or math.isnan(x) else x


def summarize(run_dir: Path) -> dict:
    """One run's eval curve against the training frames before it, and its headline numbers."""
    rows = read_metrics(run_dir)
    curve = [{"step": r["step"], "frames": sum(t["game/frames"] for t in rows if "game/frames" in t and t["step"] <= r["step"]),
              "success": r["eval/success"], "hint_agreement": clean(r.get("eval/hint_agreement"))}
             for r in rows if "eval/success" in r]
    reached = next((c["frames"] for c in curve if c["success"] >= 0.9), None)
    first, last = curve[0]["hint_agreement"], curve[-1]["hint_agreement"]
    return {"frames": curve[-1]["frames"], "final_success": curve[-1]["success"], "frames_to_0.9": reached,
            "agreement_first": first, "agreement_last": last,
            "agreement_change_points": None if first is None or last is None else 100 * (last - first), "curve": curve}


def stats(values: list) -> dict:
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 if v else None, "n": len(v)}


def aggregate(runs: dict[str, dict[int, dict]]) -> dict:
    out = {}
    for arm, seeds in runs.items():
        row = {k: stats([r[k] for r in seeds.values()]) for k in ("final_success", "frames_to_0.9", "frames", "agreement_first",
                                                                   "agreement_last", "agreement_change_points")}
        row["seeds"] = len(seeds)
        if arm != "alone" and "alone" in runs:  # per seed: this arm's frames to 0.9 over the student alone's, where both reached it
            ratios = [r["frames_to_0.9"] / runs["alone"][s]["frames_to_0.9"] for s, r in seeds.items()
                      if r["frames_to_0.9"] is not None and runs["alone"].get(s, {}).get("frames_to_0.9")]
            row["ratio_vs_alone"] = {"mean": float(np.mean(ratios)) if ratios else None, "n": len(ratios)}
        out[arm] = row
    return out


def plot(runs: dict[str, dict[int, dict]], path: Path) -> None:
    """Eval success (left) and the LLM teachers' hint agreement with BabyAIBot (right) against training frames:
    per arm, the mean over seeds (each interpolated on one grid) and their min..max."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for arm, seeds in runs.items():
        grid = np.linspace(0, min(r["frames"] for r in seeds.values()), 100)
        for ax, key in zip(axes, ("success", "hint_agreement")):
            curves = [[(c["frames"], c[key]) for c in r["curve"] if c[key] is not None] for r in seeds.values()]
            if key == "hint_agreement" and (arm == "oracle" or not all(curves)):
                continue
            ys = np.array([np.interp(grid, *zip(*curve)) for curve in curves])
            color = f"C{ARMS.index(arm)}"  # one colour per arm in both panels
            ax.plot(grid, ys.mean(0), color=color, label=f"{arm} ({len(seeds)} seeds)")
            ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.2)
    axes[0].set(xlabel="student environment frames (training)", ylabel="eval success", ylim=(-0.02, 1.02), title="BabyAI: the student")
    axes[1].set(xlabel="student environment frames (training)", ylabel="hint agreement with BabyAIBot", ylim=(-0.02, 1.02),
                title="the LLM teacher")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(s: dict, spec: str = ".2f") -> str:
    return "-" if s["mean"] is None else f"{s['mean']:{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, help="training steps per run (frames are measured); default: the yaml's")
    parser.add_argument("--teacher", default="smollm2-135m-instruct", help="player 1's model (tiny-random for a quick check)")
    parser.add_argument("--teacher-kl", type=float, default=0.1, help="the learning_sft_kl arm's KL coefficient")
    parser.add_argument("--teacher-lr", type=float, help="the learning arms' teacher learning rate (default: the yaml's)")
    parser.add_argument("--teacher-algo", choices=["reinforce", "ppo"], help="the learning arms' teacher rule (default: the yaml's)")
    parser.add_argument("--sft-steps", type=int, help="behaviour-cloning steps of the *_sft arms' teacher (default: the yaml's)")
    parser.add_argument("--level", help="BabyAI level (default: the yaml's)")
    parser.add_argument("--hint-every", type=int, help="student steps between hints (default: the yaml's)")
    parser.add_argument("--eval-every", type=int, help="default: the yaml's")
    parser.add_argument("--eval-scenarios", type=int, help="default: the yaml's")
    parser.add_argument("--scenarios-per-step", type=int, help="default: the yaml's")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/babyai_bench"))
    parser.add_argument("--overwrite", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--report", action="store_true", help="train nothing: report the runs of --arms/--seeds that finished")
    parser.add_argument("--smoke", action="store_true", help="all arms, tiny-random teacher, 1 seed, 2 steps, 8 eval scenarios, 2 per step")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE, arms=list(ARMS))
    runs = run_arms(args.arms, args, config, lambda arm, run_dir: summarize(run_dir))
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "arms": aggregate(runs), "runs": {f"{a}_seed{s}": r for a, seeds in runs.items() for s, r in seeds.items()}}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(runs, args.out / "success_vs_frames.png")
    print(json.dumps(results))
    print("| arm | seeds | final eval success | frames to 0.9 (reached/seeds) | ratio vs alone (n) | hint agreement first -> last |")
    print("|---|---|---|---|---|---|")
    for arm, a in results["arms"].items():
        ratio = f"{fmt(a['ratio_vs_alone'])} ({a['ratio_vs_alone']['n']})" if "ratio_vs_alone" in a else "-"
        print(f"| {arm} | {a['seeds']} | {fmt(a['final_success'])} ± {a['final_success']['std']:.2f} | "
              f"{fmt(a['frames_to_0.9'], '.0f')} ({a['frames_to_0.9']['n']}/{a['seeds']}) | {ratio} | "
              f"{fmt(a['agreement_first'])} -> {fmt(a['agreement_last'])} |")
    print(f"results: {args.out / 'results.json'}, plot: {args.out / 'success_vs_frames.png'}")


if __name__ == "__main__":
    main()
