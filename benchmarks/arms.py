"""What the arm benchmarks share (mixture_games.py, propose_solve.py, debate.py, babyai_teacher_student.py): one
`langgame train` run per arm and seed from an example yaml, in --out/<arm>_seed<seed>; a run whose summary.json
exists is reused, a run cut short resumes from its last checkpoint (it restarts if its config changed),
--overwrite reruns it, --report trains nothing. A finished run keeps its metrics, episodes and final policy, not its
checkpoints (a two-learner SmolLM2 run's are 4 GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

from langgame.config import load_yaml
from langgame.rl import train_rl
from langgame.rundir import config_changes
from langgame.train import train


def add_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-scenarios", type=int)
    parser.add_argument("--scenarios-per-step", type=int)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--backend", choices=["hf", "vllm"], help="rollout.backend (default: the yaml's; vllm: `make install-vllm`)")
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--overwrite", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--report", action="store_true", help="train nothing: report the runs that finished")


def base_config(example: Path, arm: str, seed: int, args: argparse.Namespace) -> dict:
    """The example's raw config with the run's seed, directory, threads, rollout backend and the step / eval overrides."""
    raw = load_yaml(example)
    raw.update(seed=seed, run_dir=str(args.out / f"{arm}_seed{seed}"), threads=args.threads)
    for key in ("max_steps", "eval_every", "eval_scenarios", "scenarios_per_step"):
        raw[key] = getattr(args, key) or raw[key]
    if args.backend:
        raw["rollout"] = {"backend": args.backend}
    return raw


def finish(cfg, overwrite: bool = False) -> Path:
    """Train a `langgame train` config (stage rl, sft or pretrain) to its end: a run cut short with this very config
    resumes from its last checkpoint, anything else in its directory is replaced. Returns the run directory."""
    resume = not overwrite and config_changes(cfg) == []
    run = train_rl if cfg.stage == "rl" else train
    return run(cfg, resume=resume, overwrite=not resume, console=Console(stderr=True, quiet=True))


def run_arms(arms: list[str], args: argparse.Namespace, config: Callable, summarize: Callable) -> dict[str, dict[int, dict]]:
    """{arm: {seed: summarize(arm, run_dir)}} of the runs that finished (training those that have not)."""
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for seed in args.seeds:
            run_dir = args.out / f"{arm}_seed{seed}"
            if not args.report and (args.overwrite or not (run_dir / "summary.json").exists()):
                finish(config(arm, seed, args), args.overwrite)
                shutil.rmtree(run_dir / "checkpoints")
            if (run_dir / "summary.json").exists():
                runs.setdefault(arm, {})[seed] = summarize(arm, run_dir)
                print(json.dumps({"arm": arm, "seed": seed, "summary": runs[arm][seed]}), file=sys.stderr, flush=True)
    return runs


def stats(values: list[float]) -> dict:
    x = np.array(values, dtype=float)
    return {"mean": float(np.nanmean(x)), "std": float(np.nanstd(x, ddof=1)) if len(x) > 1 else 0.0, "n": len(x)}


def fmt(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"
