"""Atomic checkpoints of a learner: policy, AdamW state, RNG state and trainer state.

Layout of one checkpoint directory (nothing is pickled), one subdirectory per learner
(player1/, player2/, or shared/ when one model plays both seats):
    <learner>/policy/                 loadable by load_policy() (full model or LoRA adapter + tokenizer)
    <learner>/optimizer.safetensors   AdamW tensors, keyed "<param index>.<name>"
    <learner>/optimizer.json          AdamW param_groups (hyper-parameters)
    <learner>/<head>.safetensors      extra trained modules (e.g. value.safetensors)
    arrays.safetensors                extra arrays of the driver (e.g. an average policy), if any
    rng.safetensors                   torch CPU RNG state
    state.json                        step, python/numpy RNG state and whatever the driver adds

A checkpoint is written into a temporary directory and renamed into place, then the `latest`
file is replaced; a run killed at any point leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from langgame.errors import LanggameError
from langgame.models import save_policy

if TYPE_CHECKING:
    from langgame.learner import Learner


class CheckpointError(LanggameError):
    """A checkpoint that is missing or cannot be read."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {
        f"{idx}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
        for idx, state in sd["state"].items()
        for name, v in state.items()
    }
    return tensors, sd["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(root: Path, step: int, learners: dict[str, Learner], state: dict, keep: int,
                    arrays: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoints/step_<step> atomically, point `latest` at it, keep the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".step_{step:07d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, learner in learners.items():
        save_policy(learner.policy, tmp / name / "policy")
        tensors, groups = _optimizer_tensors(learner.optimizer)
        save_file(tensors, tmp / name / "optimizer.safetensors")
        (tmp / name / "optimizer.json").write_text(json.dumps(groups))
        for head, module in learner.heads.items():
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp / name / f"{head}.safetensors")
    if arrays:
        save_file({k: v.contiguous() for k, v in arrays.items()}, tmp / "arrays.safetensors")
    save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    full_state = {
        "step": step,
        "python_rng": _jsonable(random.getstate()),
        "numpy_rng": np.random.get_state(legacy=False),
        **state,
    }
    (tmp / "state.json").write_text(json.dumps(full_state, default=_jsonable))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(root / "latest", final.name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer}: points at {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: Path, learners: dict[str, Learner]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore heads, optimizers and RNG state (the policies are loaded by the caller from
    <path>/<learner>/policy). Returns state.json and the extra arrays."""
    try:
        state = json.loads((path / "state.json").read_text())
        for name, learner in learners.items():
            for head, module in learner.heads.items():
                module.load_state_dict(load_file(path / name / f"{head}.safetensors"))
            groups = json.loads((path / name / "optimizer.json").read_text())
            _load_optimizer(learner.optimizer, load_file(path / name / "optimizer.safetensors"), groups)
        arrays = load_file(path / "arrays.safetensors") if (path / "arrays.safetensors").is_file() else {}
        torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot restore checkpoint: {e}") from None
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(state["numpy_rng"])
    return state, arrays


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return x
