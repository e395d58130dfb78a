"""Exact exploitability of LM players learning OpenSpiel games by self-play (paper 4.7-4.9, 5.2).

Parts (each prints a JSON line; at the end one JSON object and a Markdown table; plots go to --out):
  kuhn      tiny transformers from random init (tabula rasa, win/lose payoffs only), MMD, one per
            seed, each within a wall-clock budget (default 15 minutes): exploitability over time
  smollm2   the shipped SmolLM2 as the initial policy on Kuhn poker, MMD, same budget
  matrix    rock-paper-scissors and matching pennies: the last iterate of plain simultaneous
            policy gradient (mirror descent, alpha = 0) vs KL-regularised MMD over the same updates
  leduc     a tiny transformer on Leduc poker, MMD, within its own budget (default 30 minutes)

    .venv/bin/python benchmarks/spiel_selfplay.py --parts kuhn matrix          # about 15 minutes
    .venv/bin/python benchmarks/spiel_selfplay.py --parts leduc --leduc-minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rich.console import Console  # noqa: E402

from langgame.config import SelfPlayConfig  # noqa: E402
from langgame.metrics import read_metrics  # noqa: E402
from langgame.selfplay import train_selfplay  # noqa: E402

KUHN = {"game": "kuhn_poker", "text": "compact", "algo": "mmd", "alpha": 0.1, "eta": 0.3, "fit_steps": 20,
        "optim": {"lr": 1e-2, "schedule": "cosine", "min_lr_ratio": 0.05}}  # as examples/kuhn_selfplay.yaml


def run(settings: dict, minutes: float, max_steps: int, eval_every: int, out: Path, threads: int) -> list[dict]:
    """Self-play (the `langgame train` driver) until max_steps or the budget; returns
    [{step, seconds, exploitability}] from its evaluations (step 0 first).

    The LR schedule spans max_steps; a run cut by the budget stops partway through it.
    """
    cfg = SelfPlayConfig.model_validate({"stage": "selfplay", "max_steps": max_steps, "eval_every": eval_every, "threads": threads,
                                         "time_budget_s": minutes * 60, "run_dir": str(out), **settings})
    train_selfplay(cfg, overwrite=True, console=Console(stderr=True, quiet=True))
    return [{"step": r["step"], "seconds": r["time/elapsed_s"], "exploitability": r["eval/exploitability"]}
            for r in read_metrics(out) if "eval/exploitability" in r]


def summary(curve: list[dict], threshold: float = 0.05) -> dict:
    reached = next((c for c in curve if c["exploitability"] <= threshold), None)
    return {"start": curve[0]["exploitability"], "final": curve[-1]["exploitability"], "best": min(c["exploitability"] for c in curve),
            "steps": curve[-1]["step"], "seconds": curve[-1]["seconds"],
            "seconds_to_0.05": reached["seconds"] if reached else None, "curve": curve}


def plot(curves: dict[str, list[dict]], path: Path, title: str, x: str = "step") -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, curve in curves.items():
        ax.plot([c[x] for c in curve], [max(c["exploitability"], 1e-4) for c in curve], label=label)
    ax.set(xlabel="seconds" if x == "seconds" else "updates", ylabel="exploitability (last iterate)", yscale="log", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["kuhn", "matrix"], choices=["kuhn", "smollm2", "matrix", "leduc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=15.0, help="budget per Kuhn run")
    parser.add_argument("--leduc-minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_spiel"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}

    def done(name: str, result: dict) -> None:
        results[name] = result
        print(json.dumps({name: {k: v for k, v in result.items() if k != "curve"}}), file=sys.stderr, flush=True)

    if "kuhn" in args.parts:
        for seed in args.seeds:
            done(f"kuhn_tiny_seed{seed}", summary(run({**KUHN, "policy": {"model": f"tiny-random@{seed}"}}, args.minutes, 500, 25,
                                                              args.out / f"kuhn_seed{seed}", args.threads)))
        plot({k: v["curve"] for k, v in results.items() if k.startswith("kuhn")}, args.out / "kuhn.png", "Kuhn poker, tiny LM from scratch, MMD", "seconds")
    if "smollm2" in args.parts:
        settings = {**KUHN, "fit_steps": 5, "optim": {"lr": 1e-5, "schedule": "constant"},
                    "policy": {"model": "smollm2-135m-instruct", "compute_dtype": "bfloat16"}}
        done("kuhn_smollm2", summary(run(settings, args.minutes, 1500, 10, args.out / "kuhn_smollm2", args.threads)))
    if "matrix" in args.parts:
        for game in ("matrix_rps", "matrix_mp"):
            curves = {}
            for label, alpha in (("policy gradient (alpha=0)", 0.0), ("MMD (alpha=0.2)", 0.2)):
                settings = {"game": game, "text": "compact", "algo": "mmd", "alpha": alpha, "eta": 0.5, "fit_steps": 20,
                            "optim": {"lr": 1e-2, "schedule": "constant"}, "policy": {"model": "tiny-random"}}
                result = summary(run(settings, 60, 150, 5, args.out / f"{game}_{alpha}", args.threads))
                done(f"{game}_{'pg' if alpha == 0 else 'mmd'}", result)
                curves[label] = result["curve"]
            plot(curves, args.out / f"{game}.png", f"{game}: last iterate, simultaneous updates")
    if "leduc" in args.parts:
        settings = {"game": "leduc_poker", "text": "compact", "algo": "mmd", "alpha": 0.1, "eta": 0.3, "fit_steps": 5,
                    "optim": {"lr": 1e-2, "schedule": "constant"}, "micro_batch_size": 256, "policy": {"model": "tiny-random"}}
        done("leduc_tiny", summary(run(settings, args.leduc_minutes, 100000, 10, args.out / "leduc", args.threads)))
        plot({"Leduc, tiny LM, MMD": results["leduc_tiny"]["curve"]}, args.out / "leduc.png", "Leduc poker", "seconds")

    print(json.dumps(results))
    print("| run | exploitability start | final | best | updates | seconds | seconds to <= 0.05 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        t = f"{r['seconds_to_0.05']:.0f}" if r["seconds_to_0.05"] is not None else "not reached"
        print(f"| {name} | {r['start']:.4f} | {r['final']:.4f} | {r['best']:.4f} | {r['steps']} | {r['seconds']:.0f} | {t} |")
    print(f"plots: {args.out}")


if __name__ == "__main__":
    main()
