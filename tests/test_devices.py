"""Devices: `policy.device` places weights, KV cache, reference and value head; CPU is the tested
default. The CUDA tests run where a GPU is visible (benchmarks/gpu_check.sh) and are skipped here."""

import json

import pytest
import torch
from safetensors.torch import load_file

from langgame.config import PolicyConfig, load_train_config
from langgame.games import GAMES
from langgame.models import ModelError, load_policy, resolve_device
from langgame.rl import RLRun

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (run benchmarks/gpu_check.sh on a GPU)")


def test_auto_is_cpu_without_a_gpu_and_an_absent_gpu_is_a_one_line_error():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ModelError, match=r"policy.device: 'cuda:3' is not available here"):
            load_policy(PolicyConfig(model="tiny-random", device="cuda:3"))
    with pytest.raises(ValueError, match="device"):
        PolicyConfig(model="tiny-random", device="tpu")


@pytest.fixture
def duel_config(tmp_path, monkeypatch):
    monkeypatch.setitem(GAMES, "duel", "test_two_learners:DuelGame")

    def make(run, device, **changes):
        tiny = {"policy": {"model": "tiny-random", "device": device}, "sampling": {"max_new_tokens": 6}}
        cfg = {"stage": "rl", "seed": 2, "learners": [1, 2], "game": {"name": "duel"}, "player1": tiny, "player2": tiny,
               "algo": {"name": "ppo", "group_size": 4, "kl_coef": 0.05, "entropy_coef": 0.01},
               "optim": {"lr": 1e-2, "schedule": "constant"}, "scenarios_per_step": 4, "micro_batch_size": 8,
               "max_steps": 2, "eval_scenarios": 4, "run_dir": str(tmp_path / run), **changes}
        path = tmp_path / f"{run}.yaml"
        path.write_text(json.dumps(cfg))
        return load_train_config(path)

    return make


@cuda
def test_rl_step_places_everything_on_the_gpu(duel_config):
    run = RLRun(duel_config("gpu", "cuda"), None)
    values = run.step()
    for seat, learner in run.learners.items():
        assert learner.device.type == "cuda"
        assert next(learner.heads["value"].parameters()).device.type == "cuda"
        assert next(learner.reference.model.parameters()).device.type == "cuda"
        assert all(s["exp_avg"].device.type == "cuda" for s in learner.optimizer.state.values())
        assert learner.policy.version == 1 and torch.isfinite(torch.tensor(values[f"train/loss_{seat}"]))


@cuda
def test_one_update_on_gpu_matches_the_cpu_within_float_tolerance(duel_config):
    """Same seed: the rollout draws its uniforms from the same CPU generator, so the episodes agree;
    fp32 kernels differ only by rounding, so one update moves the weights to within 1e-4."""
    from langgame.loop import drive

    weights = {}
    for device in ("cpu", "cuda"):
        run_dir = drive(RLRun, duel_config(device, device, max_steps=1, algo={"name": "reinforce", "group_size": 4}))
        weights[device] = load_file(run_dir / "final" / "player2" / "model.safetensors")
    for k, v in weights["cpu"].items():
        assert torch.allclose(v, weights["cuda"][k].cpu(), atol=1e-4), k
