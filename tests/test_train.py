import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_config
from langgame import loop
from langgame.cli import main
from langgame.config import ConfigError, load_train_config
from langgame.data.episodes import write_episodes
from langgame.game import Episode, Turn
from langgame.learner import Learner
from langgame.rundir import config_changes
from langgame.metrics import read_metrics
from langgame.train import batch_indices, train


def episodes(n, offset=0):
    return [Episode([Turn(0, "sys"), Turn(1, f"{a} plus {a % 5}?"), Turn(2, f"{a + a % 5}")]) for a in range(offset, offset + n)]


@pytest.fixture
def config_file(tmp_path):
    write_episodes(tmp_path / "train.parquet", episodes(24))
    write_episodes(tmp_path / "eval.parquet", episodes(8, 100))

    def make(run="run", **extra):
        cfg = {
            "stage": "sft",
            "seed": 3,
            "policy": {"model": "tiny-random"},
            "data": {"train": str(tmp_path / "train.parquet"), "eval": str(tmp_path / "eval.parquet"), "max_length": 64},
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "batch_size": 4,
            "micro_batch_size": 2,
            "max_steps": 6,
            "save_every": 2,
            "run_dir": str(tmp_path / run),
        }
        return write_config(tmp_path / f"{run}.yaml", cfg, extra)

    return make


def final_weights(run_dir):
    files = sorted((run_dir / "final").glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


class Killed(Exception):
    pass


def kill_after(monkeypatch, step):
    update = Learner.update

    def dying(self, *args, **kwargs):
        if self.step == step:
            raise Killed
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "update", dying)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_after_kill_equals_uninterrupted_run(config_file, monkeypatch, lora):
    extra = {"policy__lora": {"r": 4, "dropout": 0.1}} if lora else {}
    whole = train(load_train_config(config_file("whole", **extra)))
    kill_after(monkeypatch, 5)  # dies during step 6; the last checkpoint is step 4
    cut_cfg = load_train_config(config_file("cut", **extra))
    with pytest.raises(Killed):
        train(cut_cfg)
    monkeypatch.undo()
    assert (cut_cfg.run_dir / "checkpoints" / "latest").read_text() == "step_0000004"
    train(cut_cfg, resume=True)
    a, b = final_weights(whole), final_weights(cut_cfg.run_dir)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in read_metrics(cut_cfg.run_dir) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # nothing logged twice, nothing lost
    losses = lambda d: [r["train/loss"] for r in read_metrics(d) if "train/loss" in r]  # noqa: E731
    assert losses(whole) == losses(cut_cfg.run_dir)


def test_resume_of_a_run_killed_before_finish_does_not_evaluate_twice(config_file, monkeypatch):
    cfg = load_train_config(config_file())
    monkeypatch.setattr(loop, "finish", lambda *a: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):
        train(cfg)  # killed after its final evaluation and checkpoint
    monkeypatch.undo()
    train(cfg, resume=True)
    steps = [r["step"] for r in read_metrics(cfg.run_dir) if "eval/nll_p2" in r]
    assert steps == [0, 6] and (cfg.run_dir / "summary.json").is_file()


def test_run_directory_contents(config_file):
    run_dir = train(load_train_config(config_file()))
    assert yaml_load(run_dir / "config.yaml")["stage"] == "sft"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_first"]["step"] == 0 and summary["eval_last"]["step"] == 6
    assert summary["eval_last"]["eval/nll_p2"] < summary["eval_first"]["eval/nll_p2"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert kept == ["step_0000004", "step_0000006"]  # keep_checkpoints=2
    # checkpoints hold no pickles: safetensors, JSON and tokenizer text files only
    suffixes = {p.suffix for p in (run_dir / "checkpoints").rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jinja", ".txt", ""}, suffixes


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_run_dir_is_never_silently_overwritten(config_file):
    cfg = load_train_config(config_file())
    train(cfg)
    with pytest.raises(ConfigError, match="not empty; pass --resume"):
        train(cfg)


def test_resume_with_changed_config_is_refused(config_file):
    train(load_train_config(config_file()))
    with pytest.raises(ConfigError, match=r"--resume with a different config \(keys: optim\)"):
        train(load_train_config(config_file(optim={"lr": 1.0})), resume=True)


def test_a_run_saved_before_a_setting_existed_resumes(config_file):
    import yaml

    cfg = load_train_config(config_file(max_steps=2))
    train(cfg)
    saved = cfg.run_dir / "config.yaml"
    raw = yaml_load(saved)
    del raw["policy"]["gradient_checkpointing"], raw["keep_checkpoints"]  # as an older langgame wrote it
    saved.write_text(yaml.safe_dump(raw))
    assert config_changes(cfg) == []
    raw["batch_size"] = 8  # a setting that did change is still one
    saved.write_text(yaml.safe_dump(raw))
    assert config_changes(cfg) == ["batch_size"]


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"stagee": "sft"}, "stagee: unknown key"),
        ({"optim": {"lr": "fast"}}, "optim.lr: Input should be a valid number"),
        ({"policy": {"model": "tiny-random", "lora": {"rank": 4}}}, "policy.lora.rank: unknown key"),
        ({"stage": "rlhf"}, "stage: expected one of pretrain, sft, rl, selfplay, got 'rlhf'"),
        ({"batch_size": 3}, "micro_batch_size (2) must divide batch_size (3)"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(config_file, tmp_path, capsys, patch, message):
    raw = json.loads(config_file().read_text())
    raw.update(patch)
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(raw))
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: ") and message in err and "\n" not in err


def test_yaml_reads_exponent_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\ndata: {train: x.parquet}\noptim: {lr: 5e-5}\n")
    assert load_train_config(path).optim.lr == 5e-5


def test_batches_cover_each_epoch_exactly_once():
    seen = [i for step in range(6) for i in batch_indices(step, 4, 12, seed=1)]
    assert sorted(seen[:12]) == list(range(12)) and sorted(seen[12:]) == list(range(12))
    assert seen[:12] != seen[12:]  # a fresh order each epoch
    assert batch_indices(3, 4, 12, seed=1) == batch_indices(3, 4, 12, seed=1)


def test_cli_train_end_to_end(config_file, capsys):
    path = config_file()
    assert main(["train", str(path), "--set", "max_steps=2", "--set", "save_every=0"]) == 0
    out = capsys.readouterr().out
    assert "run directory:" in out and "final policy:" in out


@pytest.mark.smollm2
def test_sft_on_shipped_smollm2_lowers_player_two_nll(tmp_path):
    from langgame.data.synth import synth_episodes

    write_episodes(tmp_path / "qa.parquet", synth_episodes(8, seed=0, turns=1))
    path = tmp_path / "sft.yaml"
    path.write_text(json.dumps({
        "stage": "sft",
        "policy": {"model": "smollm2-135m-instruct", "compute_dtype": "bfloat16"},
        "data": {"train": str(tmp_path / "qa.parquet"), "eval": str(tmp_path / "qa.parquet"), "max_length": 256},
        "optim": {"lr": 1e-4, "schedule": "constant"},
        "batch_size": 4, "max_steps": 4, "run_dir": str(tmp_path / "run"),
    }))
    summary = json.loads((train(load_train_config(path)) / "summary.json").read_text())
    assert summary["eval_last"]["eval/nll_p2"] < 0.7 * summary["eval_first"]["eval/nll_p2"]
