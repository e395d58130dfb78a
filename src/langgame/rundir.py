"""Run directories: created once (resolved config.yaml), resumed, and finished (final/, summary.json).

    config.yaml     the resolved config          metrics.jsonl, tb/   metrics (metrics.py)
    checkpoints/    checkpoint.py                episodes/            evaluation episodes (Parquet)
    final/          the final policy (several policies: one subdirectory per learner)
    summary.json    the first and last evaluation, and the run's header
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from langgame.checkpoint import latest_checkpoint, write_atomic
from langgame.config import ConfigError
from langgame.metrics import read_metrics
from langgame.models import Policy, save_policy


def config_changes(cfg: BaseModel) -> list[str] | None:
    """The top-level keys where cfg differs from the resolved config saved in cfg.run_dir; None where none is saved.
    The saved config is resolved again by this version's schema, so a setting added since (at its default, which
    keeps the old behaviour) is no change: a run saved by an older langgame resumes."""
    saved = cfg.run_dir / "config.yaml"
    if not saved.is_file():
        return None
    before, now = yaml.safe_load(saved.read_text()), json.loads(cfg.model_dump_json())
    try:
        before = json.loads(type(cfg).model_validate(before).model_dump_json())
    except ValidationError:  # a setting this version no longer has: compared as saved
        pass
    return [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def prepare_run_dir(cfg: BaseModel, resume: bool, overwrite: bool) -> Path | None:
    """Create cfg.run_dir with its resolved config; return the checkpoint to resume from, if any.

    A non-empty run directory is never replaced silently: it needs --resume (same config) or --overwrite.
    """
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    diff = config_changes(cfg) if resume else None
    if diff is not None:
        if diff:
            raise ConfigError(f"{saved}: --resume with a different config (keys: {', '.join(diff)})")
        return latest_checkpoint(run_dir / "checkpoints")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{run_dir}: run directory is not empty; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    return None


def finish(run_dir: Path, policies: dict[str, Policy], header: dict) -> None:
    """Write final/ atomically (one policy: at its root) and summary.json (header + first and last evaluation)."""
    tmp = run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, policy in policies.items():
        save_policy(policy, tmp if len(policies) == 1 else tmp / name)
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    os.replace(tmp, run_dir / "final")
    evals = [r for r in read_metrics(run_dir) if any(k.startswith("eval") for k in r)]
    summary = {**header, **({"eval_first": evals[0], "eval_last": evals[-1]} if evals else {})}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
