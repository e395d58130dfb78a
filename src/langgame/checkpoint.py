"""Atomic checkpoints of a learner: policy, AdamW state, RNG state and trainer state.

Layout of one checkpoint directory (nothing is pickled), one subdirectory per learner
(player1/, player2/, or shared/ when one model plays both seats):
    <learner>/policy/                 loadable by load_policy() (full model or LoRA adapter + tokenizer)
    <learner>/optimizer.safetensors   AdamW tensors, keyed "<param index>.<name>" (newest checkpoint only)
    <learner>/optimizer.json          AdamW param_groups (hyper-parameters) (newest checkpoint only)
    <learner>/<head>.safetensors      extra trained modules (e.g. value.safetensors)
    arrays.safetensors                extra arrays of the driver (e.g. an average policy), if any
    rng.safetensors                   torch CPU RNG state (and the CUDA generators' where a GPU is used)
    state.json                        step, python/numpy RNG state and whatever the driver adds

A checkpoint is written into a temporary directory and renamed into place, then the `latest`
file is replaced; only then do the older kept checkpoints lose their optimizer files (AdamW keeps
two tensors per trained parameter, and only `latest` is ever resumed), so they stay loadable
policies (cross-play, population opponents, `langgame eval`) at about a third of the size.
A run killed at any point leaves `latest` resumable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from langgame.errors import LanggameError
from langgame.models import save_policy

if TYPE_CHECKING:
    from langgame.learner import Learner


OPTIMIZER_TENSORS, OPTIMIZER_GROUPS = "optimizer.safetensors", "optimizer.json"


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


def save_learners(directory: Path, learners: dict[str, Learner]) -> None:
    """Each learner's part of a checkpoint: <directory>/<learner>/ with its policy, optimizer and heads."""
    for name, learner in learners.items():
        save_policy(learner.policy, directory / name / "policy")
        tensors, groups = _optimizer_tensors(learner.optimizer)
        save_file(tensors, directory / name / OPTIMIZER_TENSORS)
        (directory / name / OPTIMIZER_GROUPS).write_text(json.dumps(groups))
        for head, module in learner.heads.items():
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, directory / name / f"{head}.safetensors")


def save_checkpoint(root: Path, step: int, learners: dict[str, Learner], state: dict, keep: int,
                    arrays: dict[str, torch.Tensor] | None = None, write: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoints/step_<step> atomically, point `latest` at it, keep the newest `keep`, and
    drop the optimizer state of all but the new one. write(tmp): more of the checkpoint, written into
    its temporary directory before it is renamed into place (learners in other processes: engine.py)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    _finish_killed_save(root)
    for stale in root.glob(".step_*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".step_{step:07d}.tmp-{os.getpid()}"
    tmp.mkdir()
    save_learners(tmp, learners)
    if write is not None:
        write(tmp)
    if arrays:
        save_file({k: v.contiguous() for k, v in arrays.items()}, tmp / "arrays.safetensors")
    cuda = {f"cuda{i}": r for i, r in enumerate(torch.cuda.get_rng_state_all())} if torch.cuda.is_initialized() else {}
    save_file({"torch": torch.get_rng_state(), **cuda}, tmp / "rng.safetensors")
    full_state = {
        "step": step,
        "python_rng": _jsonable(random.getstate()),
        "numpy_rng": np.random.get_state(legacy=False),
        **state,
    }
    (tmp / "state.json").write_text(json.dumps(full_state, default=_jsonable))
    aside = _aside(final)
    if final.exists():  # saving the same step again (e.g. --resume of a finished run): move the old copy aside
        os.replace(final, aside)  # _finish_killed_save() moves it back if we die before the next line
    os.replace(tmp, final)
    write_atomic(root / "latest", final.name)
    shutil.rmtree(aside, ignore_errors=True)
    kept = sorted(root.glob("step_*"))
    for old in kept[:-keep]:
        if old != final:
            shutil.rmtree(old)
    for old in kept[-keep:]:
        if old != final:
            drop_optimizer_state(old)
    return final


def drop_optimizer_state(checkpoint: Path) -> None:
    """Delete the optimizer files of every learner: the checkpoint keeps its policies, heads, RNG and
    state.json (loadable policies, no longer resumable). Never applied to the one `latest` names."""
    for name in (OPTIMIZER_TENSORS, OPTIMIZER_GROUPS):
        for f in checkpoint.glob(f"*/{name}"):
            f.unlink(missing_ok=True)


def has_optimizer_state(checkpoint: Path, learner: str) -> bool:
    return all((checkpoint / learner / name).is_file() for name in (OPTIMIZER_TENSORS, OPTIMIZER_GROUPS))


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _finish_killed_save(root: Path) -> None:
    """A re-save of a step killed between moving the old copy aside and renaming the new one in
    leaves step_N missing: move the old copy back. A copy whose replacement arrived is deleted."""
    for aside in root.glob(".step_*.old"):
        final = aside.with_name(aside.name[1 : -len(".old")])
        if final.exists():
            shutil.rmtree(aside)
        else:
            os.replace(aside, final)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    _finish_killed_save(root)
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer}: points at {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: Path, learners: dict[str, Learner]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore heads, optimizers and RNG state (the policies are loaded by the caller from
    <path>/<learner>/policy). Returns state.json and the extra arrays. Only the newest checkpoint
    (`latest`) holds optimizer state; an older one raises CheckpointError."""
    for name in learners:
        if (path / name / "policy").is_dir() and not has_optimizer_state(path, name):
            raise CheckpointError(f"{path}: holds weights only (no optimizer state for {name}; only the newest checkpoint, "
                                  f"`latest`, keeps it): load its policy from {path / name / 'policy'} or resume from latest")
    try:
        state = json.loads((path / "state.json").read_text())
        for name, learner in learners.items():
            for head, module in learner.heads.items():
                module.load_state_dict(load_file(path / name / f"{head}.safetensors"))
            groups = json.loads((path / name / OPTIMIZER_GROUPS).read_text())
            _load_optimizer(learner.optimizer, load_file(path / name / OPTIMIZER_TENSORS), groups)
        arrays = load_file(path / "arrays.safetensors") if (path / "arrays.safetensors").is_file() else {}
        rng = load_file(path / "rng.safetensors")
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and "cuda0" in rng:
            torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
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
