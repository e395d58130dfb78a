"""engine: ray — each learning seat in a Ray actor: bitwise the numbers of engine: local, a dead
actor ends the run with one line, and --resume finishes it."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ray = pytest.importorskip("ray")

from langgame import rl  # noqa: E402
from langgame.cli import main  # noqa: E402
from langgame.config import load_train_config  # noqa: E402
from langgame.engine import connect  # noqa: E402
from langgame.games import GAMES  # noqa: E402
from langgame.metrics import read_metrics  # noqa: E402


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """Two tiny LoRA learners (sharing separate, reinforce + KL) in the duel game; one Ray session for the module."""
    root = tmp_path_factory.mktemp("engine")
    short = Path(tempfile.mkdtemp(prefix="lg-", dir="/tmp"))  # Ray's session files: a short path for its unix sockets
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(GAMES, "duel", "test_two_learners:DuelGame")
        assert connect(None, short)  # runs join this session instead of starting their own

        def make(run, **changes):
            # LoRA adapters with dropout: their init and the dropout masks draw from the torch RNG, in both workers
            tiny = {"policy": {"model": "tiny-random", "device": "cpu", "lora": {"r": 4, "dropout": 0.1}}, "sampling": {"max_new_tokens": 6}}
            cfg = {"stage": "rl", "seed": 2, "threads": 1, "learners": [1, 2], "game": {"name": "duel"}, "player1": tiny, "player2": tiny,
                   "algo": {"name": "reinforce", "group_size": 2, "kl_coef": 0.05}, "optim": {"lr": 2e-2, "schedule": "constant"},
                   "scenarios_per_step": 4, "micro_batch_size": 4, "max_steps": 3, "save_every": 2, "eval_scenarios": 4,
                   "run_dir": str(root / run), **changes}
            path = root / f"{run}.yaml"
            path.write_text(json.dumps(cfg))
            return load_train_config(path), path

        yield make
        ray.shutdown()
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(config):
    """The reference: the same run on engine: local, uninterrupted."""
    return rl.train_rl(config("local", engine="local")[0])


def weights(run_dir, seat):
    return {k: v for f in sorted((run_dir / "final" / seat).glob("*.safetensors")) for k, v in load_file(f).items()}


def same_weights(a, b):
    for seat in ("player1", "player2"):
        x, y = weights(a, seat), weights(b, seat)
        assert x and x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), seat


def steady(run_dir):
    """The run's metrics without wall-clock numbers."""
    return [{k: v for k, v in r.items() if "time/" not in k and "_per_s" not in k} for r in read_metrics(run_dir)]


def files(run_dir, sub):
    return sorted(str(f.relative_to(run_dir)) for f in (run_dir / sub).rglob("*") if f.is_file())


def test_ray_engine_gives_bitwise_the_weights_and_metrics_of_the_local_engine(config, local_run):
    run_dir = rl.train_rl(config("ray", engine="ray")[0])
    same_weights(run_dir, local_run)
    for seat in ("player1", "player2"):  # both learned: LoRA's B matrices start at zero
        assert all(v.abs().sum() > 0 for k, v in weights(run_dir, seat).items() if "lora_B" in k)
    assert steady(run_dir) == steady(local_run) and len(steady(run_dir)) == 3 + 2  # 3 steps, evaluations at 0 and 3
    # the same layout: checkpoints/step_N/<seat>/..., final/<seat>/..., written by the workers
    assert files(run_dir, "checkpoints") == files(local_run, "checkpoints") and files(run_dir, "final") == files(local_run, "final")
    for name in ("rng.safetensors", "state.json"):  # the driver's RNG state: the workers drew from the same stream
        assert (run_dir / "checkpoints" / "step_0000003" / name).read_bytes() == (local_run / "checkpoints" / "step_0000003" / name).read_bytes()


def test_a_killed_seat_actor_ends_the_run_in_one_line_and_resume_finishes_it(config, local_run, capsys):
    cfg, path = config("killed", engine="ray")
    step, killed = rl.RLRun.step, []

    def dying(self):
        if self.iteration == 2:  # after the checkpoint at step 2
            handle = self.engine.owner["player2"].obj
            assert isinstance(handle, ray.actor.ActorHandle)
            ray.kill(handle)
            killed.append(handle)
        return step(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rl.RLRun, "step", dying)
        assert main(["train", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # workers' logs may interleave
    assert killed and len(errors) == 1, errors
    assert errors[0].startswith("error: seat player2's Ray actor died: ") and errors[0].endswith("; continue with --resume")
    assert (cfg.run_dir / "checkpoints" / "latest").read_text() == "step_0000002" and not (cfg.run_dir / "final").exists()
    assert main(["train", str(path), "--resume"]) == 0
    same_weights(cfg.run_dir, local_run)
    rewards = lambda d: [r["reward/p1"] for r in read_metrics(d) if "reward/p1" in r]  # noqa: E731
    assert rewards(cfg.run_dir) == rewards(local_run) and len(rewards(local_run)) == 3 and any(rewards(local_run))


def test_address_needs_the_ray_engine(config, capsys):
    _, path = config("address", engine="local")
    assert main(["train", str(path), "--address", "auto"]) == 2
    assert "--address auto: joining a Ray cluster needs stage: rl with engine: ray" in capsys.readouterr().err


def test_an_llm_teacher_and_a_network_student_run_on_ray_as_in_one_process(config):
    """The BabyAI game: a tiny LM teacher (REINFORCE) and the babyai-net student (PPO) in two Ray actors."""
    babyai = {"game": {"name": "babyai", "options": {"hint_every": 8}}, "max_steps": 2, "save_every": 0,
              "player1": {"policy": {"model": "tiny-random", "device": "cpu"}, "sampling": {"max_new_tokens": 4}},
              "player2": {"policy": {"model": "babyai-net", "device": "cpu"},
                          "algo": {"name": "ppo", "group_size": 2, "epochs": 2, "guide_coef": 0.5}, "optim": {"lr": 1e-3}}}
    local = rl.train_rl(config("babyai_local", engine="local", **babyai)[0])
    remote = rl.train_rl(config("babyai_ray", engine="ray", **babyai)[0])
    same_weights(remote, local)
    assert steady(remote) == steady(local) and sum("game/frames" in r for r in steady(remote)) == 2
