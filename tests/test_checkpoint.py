"""Checkpoints keep optimizer state only in the newest one (`latest`); older kept checkpoints are
loadable policies; a save killed at any point leaves `latest` resumable."""

import os

import pytest
import torch
from safetensors.torch import load_file

from langgame import checkpoint
from langgame.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from langgame.config import OptimConfig, PolicyConfig
from langgame.learner import Learner
from langgame.models import load_policy

SEATS = ("player1", "player2")
OPTIMIZER_FILES = {"optimizer.safetensors", "optimizer.json"}


def make_learners() -> dict[str, Learner]:
    return {seat: Learner(load_policy(PolicyConfig(model="tiny-random", device="cpu")), OptimConfig(lr=1e-2), max_steps=10, heads={"value": torch.nn.Linear(4, 1)})
            for seat in SEATS}


def step(learners: dict[str, Learner]) -> None:
    """One AdamW step per learner (directly on learner.optimizer, whatever Learner.update's signature),
    so that the optimizer state is non-empty and the weights and head move."""
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    for learner in learners.values():
        loss = learner.policy.model(ids).logits.float().pow(2).mean() + learner.heads["value"](torch.ones(4)).sum()
        loss.backward()
        learner.optimizer.step()
        learner.optimizer.zero_grad(set_to_none=True)
        learner.step += 1


def snapshot(learners: dict[str, Learner]) -> dict[str, dict[str, torch.Tensor]]:
    """What a resume must restore: the weights and AdamW's first moment of every learner."""
    out = {}
    for seat, learner in learners.items():
        weight = next(p for n, p in learner.policy.model.named_parameters() if n.endswith("q_proj.weight"))
        out[seat] = {"weight": weight.detach().clone(), "exp_avg": learner.optimizer.state[weight]["exp_avg"].clone(),
                     "steps": torch.tensor(learner.step)}
    return out


def run(root, learners, steps, keep):
    """Take `steps` optimizer steps, saving after each; returns the snapshot at each step."""
    seen = {}
    for _ in range(steps):
        step(learners)
        n = learners["player1"].step
        save_checkpoint(root, n, learners, {"iteration": n}, keep)
        seen[n] = snapshot(learners)
    return seen


def resume(root) -> tuple[int, dict]:
    """Resume from `latest` as a driver does: policies from <latest>/<seat>/policy, then load_checkpoint."""
    path = latest_checkpoint(root)
    learners = {seat: Learner(load_policy(PolicyConfig(model=str(path / seat / "policy"), device="cpu")), OptimConfig(lr=1e-2), max_steps=10,
                              heads={"value": torch.nn.Linear(4, 1)}) for seat in SEATS}
    state, _ = load_checkpoint(path, learners)
    for learner in learners.values():
        learner.step = state["step"]
    return state["step"], snapshot(learners)


def assert_same(a, b):
    for seat in SEATS:
        for key in a[seat]:
            assert torch.equal(a[seat][key], b[seat][key]), (seat, key)


def files(path):
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def learners():
    torch.manual_seed(0)
    return make_learners()


def test_only_the_newest_checkpoint_keeps_optimizer_state(tmp_path, learners):
    root = tmp_path / "checkpoints"
    run(root, learners, 4, keep=3)
    kept = sorted(p.name for p in root.glob("step_*"))
    assert kept == ["step_0000002", "step_0000003", "step_0000004"]  # keep bounds the count
    assert (root / "latest").read_text() == "step_0000004"
    assert not list(root.glob(".*step_*"))  # no temporary or set-aside directories left
    newest = files(root / "step_0000004")
    for seat in SEATS:
        assert {f"{seat}/{f}" for f in OPTIMIZER_FILES} <= newest
        assert load_file(root / "step_0000004" / seat / "optimizer.safetensors")  # non-empty AdamW state
    for name in kept[:-1]:
        old = files(root / name)
        assert newest - old == {f"{seat}/{f}" for seat in SEATS for f in OPTIMIZER_FILES}  # everything else stays
        assert {"state.json", "rng.safetensors", "player1/value.safetensors", "player2/value.safetensors"} <= old


def test_keep_one_keeps_only_latest(tmp_path, learners):
    root = tmp_path / "checkpoints"
    run(root, learners, 3, keep=1)
    assert [p.name for p in root.glob("step_*")] == ["step_0000003"]
    assert resume(root)[0] == 3


def test_older_checkpoints_are_loadable_policies(tmp_path, learners):
    root = tmp_path / "checkpoints"
    seen = run(root, learners, 3, keep=3)
    for n in (1, 2):
        for seat in SEATS:
            policy = load_policy(PolicyConfig(model=str(root / f"step_{n:07d}" / seat / "policy"), device="cpu"))
            weight = next(p for name, p in policy.model.named_parameters() if name.endswith("q_proj.weight"))
            assert torch.equal(weight, seen[n][seat]["weight"])


def test_loading_a_weights_only_checkpoint_is_a_one_line_error(tmp_path, learners):
    root = tmp_path / "checkpoints"
    run(root, learners, 2, keep=2)
    old = root / "step_0000001"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(old, make_learners())
    message = str(e.value)
    assert message.startswith(f"{old}: holds weights only") and "\n" not in message


def test_latest_resumes_with_its_optimizer_state(tmp_path, learners):
    root = tmp_path / "checkpoints"
    seen = run(root, learners, 3, keep=2)
    n, restored = resume(root)
    assert n == 3
    assert_same(restored, seen[3])


class Killed(Exception):
    pass


def die_on_replace(monkeypatch, root, call):
    """Raise at the `call`-th os.replace that save_checkpoint makes in `root` (1-based), as a kill would."""
    real = os.replace
    count = [0]

    def replace(src, dst, *args, **kwargs):
        if os.path.dirname(os.fspath(dst)) == os.fspath(root):
            count[0] += 1
            if count[0] == call:
                raise Killed
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint.os, "replace", replace)


# a new step: 1 = renaming the written tmp dir into place, 2 = replacing `latest`.
# the same step again (e.g. --resume of a finished run): 1 = moving the old copy aside,
# 2 = renaming the new one into place, 3 = replacing `latest`.
@pytest.mark.parametrize("same_step,call", [(False, 1), (False, 2), (True, 1), (True, 2), (True, 3)])
def test_a_save_killed_midway_leaves_latest_resumable(tmp_path, learners, monkeypatch, same_step, call):
    root = tmp_path / "checkpoints"
    seen = run(root, learners, 2, keep=2)
    if not same_step:
        step(learners)
    n = learners["player1"].step
    die_on_replace(monkeypatch, root, call)
    with pytest.raises(Killed):
        save_checkpoint(root, n, learners, {"iteration": n}, 2)
    monkeypatch.undo()
    assert bool(list(root.glob(".step_*.tmp-*"))) == (call <= (2 if same_step else 1))  # killed after writing the tmp dir
    resumed, restored = resume(root)
    assert resumed == 2
    assert_same(restored, seen[2])
    # the run continues: the next save cleans up what the killed one left
    more = run(root, learners, 1, keep=2)
    assert not list(root.glob(".*step_*"))
    assert_same(resume(root)[1], more[n + 1])


def test_a_kill_while_dropping_old_optimizer_state_leaves_latest_resumable(tmp_path, learners, monkeypatch):
    root = tmp_path / "checkpoints"
    run(root, learners, 2, keep=3)
    step(learners)

    def dying(path):
        for f in path.glob("player1/optimizer.safetensors"):
            f.unlink()
        raise Killed

    monkeypatch.setattr(checkpoint, "drop_optimizer_state", dying)
    with pytest.raises(Killed):
        save_checkpoint(root, 3, learners, {"iteration": 3}, 3)
    monkeypatch.undo()
    resumed, restored = resume(root)
    assert resumed == 3
    assert_same(restored, snapshot(learners))
    with pytest.raises(CheckpointError, match="holds weights only"):  # half-stripped: never resumed from
        load_checkpoint(root / "step_0000001", make_learners())
    run(root, learners, 1, keep=3)  # the next save finishes the job
    optimizer_files = {f"{seat}/{f}" for seat in SEATS for f in OPTIMIZER_FILES}
    with_optimizer = [p.name for p in sorted(root.glob("step_*")) if files(p) & optimizer_files]
    assert with_optimizer == ["step_0000004"]
