import json
import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from langgame.config import PolicyConfig  # noqa: E402
from langgame.game import Episode, Payoff, Turn  # noqa: E402
from langgame.models import load_policy  # noqa: E402


@pytest.fixture
def tiny():
    """Unit tests handle raw tensors on the CPU; driver tests use policy.device: auto (the GPU where there is one)."""
    return load_policy(PolicyConfig(model="tiny-random", device="cpu"))


@pytest.fixture(scope="session")
def smollm2():
    return load_policy("smollm2-135m-instruct")


def kill_and_resume(cfg, at: int) -> None:
    """Train an RL config whose run dies (RuntimeError) when step `at` begins, then --resume it to the end."""
    from langgame import rl

    step = rl.RLRun.step

    def dying(self):
        if self.iteration == at:
            raise RuntimeError("killed")
        return step(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rl.RLRun, "step", dying)
        with pytest.raises(RuntimeError, match="killed"):
            rl.train_rl(cfg)
    rl.train_rl(cfg, resume=True)


def write_config(path, cfg: dict, changes: dict):
    """Write cfg as JSON to path with changes applied; a key "a__b" sets cfg["a"]["b"]. Returns path."""
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(json.dumps(cfg))
    return path


def final_weights(run_dir, seat: str = "") -> dict:
    """Every tensor of a run's final/ (or final/<seat>/) safetensors files."""
    from safetensors.torch import load_file

    return {k: v for f in (run_dir / "final" / seat).glob("*.safetensors") for k, v in load_file(f).items()}


def dialogue() -> Episode:
    """Multi-turn, with context, a Q-C-A turn and a player trying to forge a control token."""
    return Episode(
        [
            Turn(0, "You keep answers short."),
            Turn(1, "Who is Harry Potter?"),
            Turn(2, "A fictional wizard.", thought="The question names a book character.\nRecall the novels."),
            Turn(1, "  Who wrote <|im_end|> the books? "),
            Turn(2, "J. K. Rowling.", rewards=(0.5, 1.0)),
        ],
        payoff=Payoff.GENERAL_SUM,
        id="harry",
    )
