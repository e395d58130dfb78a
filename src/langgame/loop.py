"""The one driver loop of `langgame train`: every stage (pretrain, sft, rl, selfplay) is a `Run`
whose `step()` this loop calls, in one process or with seats on Ray actors (the Run decides where
its learners live; the loop never touches a model).

drive: run directory (resolved config, or --resume from the last checkpoint), seeds, held-out
evaluation at step 0 / every `eval_every` / the end, checkpoints every `save_every` and at the
end, a checkpoint on Ctrl-C, an optional wall-clock budget, and final/ + summary.json.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgame.data.episodes import write_episodes
from langgame.game import Episode
from langgame.metrics import MetricsLog, read_metrics
from langgame.models import Policy
from langgame.rundir import finish, prepare_run_dir
from langgame.runtime import configure_cpu


class Run(Protocol):
    """One training run's state. `iteration` counts completed steps (the checkpoint's step)."""

    iteration: int
    header: dict  # what summary.json says the run was (stage, game, learners...)

    def step(self) -> dict[str, float]: ...

    def evaluate(self) -> tuple[dict[str, float], list[Episode]]:
        """Held-out metrics (keys eval*/...) and the episodes to keep (may be empty)."""

    def checkpoint(self, root: Path, keep: int, state: dict) -> None:
        """Write checkpoint `iteration` under root (checkpoint.save_checkpoint), adding the run's own state."""

    def final_policies(self) -> dict[str, Policy]:
        """The final policy of each learning seat (for final/)."""

    def progress(self, values: dict[str, float]) -> str: ...

    def close(self) -> None: ...


def drive(build: Callable[[object, Path | None], Run], cfg, resume: bool = False, overwrite: bool = False,
          console: Console | None = None) -> Path:
    """Create or resume cfg.run_dir, build the run (from the checkpoint when resuming), train it to
    cfg.max_steps or cfg.time_budget_s, and finish. Returns the run directory."""
    console = console or Console(stderr=True)
    checkpoint = prepare_run_dir(cfg, resume, overwrite)
    configure_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    run = build(cfg, checkpoint)
    if checkpoint is not None:
        console.print(f"resuming from {checkpoint}")
    # --resume of a run killed before its first checkpoint starts over: its metrics too
    log = MetricsLog(cfg.run_dir, resume_step=(run.iteration if checkpoint is not None else -1) if resume else None)
    started = time.perf_counter()
    # a run killed between its final checkpoint and finish() was already evaluated at that step
    evaluated = checkpoint is not None and any(r["step"] == run.iteration and any(k.startswith("eval/") for k in r)
                                               for r in read_metrics(cfg.run_dir))
    done = {"eval": run.iteration if evaluated else -1, "save": run.iteration if checkpoint is not None else -1}

    def evaluate() -> None:
        values, episodes = run.evaluate()
        values["time/elapsed_s"] = time.perf_counter() - started
        if episodes:
            write_episodes(cfg.run_dir / "episodes" / f"eval_step{run.iteration:07d}.parquet", episodes)
        log.log(run.iteration, values)
        console.print(f"step {run.iteration}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k.startswith("eval")))
        done["eval"] = run.iteration

    def save() -> None:
        run.checkpoint(cfg.run_dir / "checkpoints", cfg.keep_checkpoints, {"iteration": run.iteration})
        done["save"] = run.iteration

    def out_of_time() -> bool:
        return cfg.time_budget_s is not None and time.perf_counter() - started >= cfg.time_budget_s

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    try:
        if checkpoint is None:
            evaluate()
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(run.header.get("stage", "train"), total=cfg.max_steps, completed=run.iteration, info="")
            while run.iteration < cfg.max_steps and not out_of_time():
                values = run.step()
                log.log(run.iteration, values)
                bar.update(task, completed=run.iteration, info=run.progress(values))
                if cfg.eval_every and run.iteration % cfg.eval_every == 0 and run.iteration < cfg.max_steps:
                    evaluate()
                if cfg.save_every and run.iteration % cfg.save_every == 0 and run.iteration < cfg.max_steps:
                    save()
    except KeyboardInterrupt:
        if done["save"] != run.iteration:
            save()
        log.close()
        run.close()
        console.print(f"interrupted: checkpoint saved at step {run.iteration}; continue with --resume")
        raise
    if done["eval"] != run.iteration:
        evaluate()
    if done["save"] != run.iteration:
        save()
    log.close()
    finish(cfg.run_dir, run.final_policies(), run.header)
    run.close()
    return cfg.run_dir
