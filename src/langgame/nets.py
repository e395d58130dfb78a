"""Players that are not language models: a small network over a game's structured observation.

The paper's formalism does not need the player to be an LM: an RL student acting in an environment
is a player whose every action is one "token" from a small action set, and whose state s_t is its
observation (a StepView row) instead of a token prefix. NetPolicy gives such a network the calls an
LM policy has (encode, sample, decode, forward), so the same Actor, Learner and rules (PPO's value
head and GAE included) train it. The weights are saved as safetensors with a JSON config.

`babyai-net` (BabyAINet) is the BabyAI student: the 7x7x3 symbolic view (object, colour and state
embeddings, two convolutions), its direction, the mission's words and the teacher's current hint
(a suggested action, or none) with its age in steps, into a trunk whose last hidden state feeds
the action head and PPO's value head.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from langgame.config import PolicyConfig
from langgame.game import Rendered, StepView
from langgame.models import ModelError, Policy, resolve_device
from langgame.objective import Batch, Forward

CONFIG, WEIGHTS = "config.json", "model.safetensors"


class BabyAINet(torch.nn.Module):
    """pi(a | view, mission, hint) and the hidden state h for a value head. inputs: image [N, 7, 7, 3],
    direction [N], mission [N, L] word ids (0 = padding), hint [N] (0 = none, 1 + action), hint_age [N].
    config: n_objects, n_colors, n_states, vocab (mission words), actions (names), max_hint_age, hidden_size."""

    model_type = "babyai_net"

    def __init__(self, config: dict):
        super().__init__()
        self.config = c = SimpleNamespace(**config)  # read like a transformers config (config.hidden_size)
        e = 16
        self.objects, self.colors, self.states = (torch.nn.Embedding(n, e) for n in (c.n_objects, c.n_colors, c.n_states))
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(e, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3), torch.nn.ReLU())
        self.direction = torch.nn.Embedding(4, 8)
        self.words = torch.nn.Embedding(c.vocab, 32, padding_idx=0)
        self.hints = torch.nn.Embedding(len(c.actions) + 1, 16)
        self.ages = torch.nn.Embedding(c.max_hint_age, 8)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(32 * 3 * 3 + 8 + 32 + 16 + 8, c.hidden_size), torch.nn.Tanh())
        self.head = torch.nn.Linear(c.hidden_size, len(c.actions))

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, A] and hidden states [N, H]."""
        image = inputs["image"].long()
        x = self.objects(image[..., 0]) + self.colors(image[..., 1]) + self.states(image[..., 2])
        x = self.conv(x.permute(0, 3, 1, 2)).flatten(1)
        words = inputs["mission"].long()
        mission = self.words(words).sum(1) / (words > 0).sum(1, keepdim=True).clamp(min=1)
        age = inputs["hint_age"].long().clamp(max=self.config.max_hint_age - 1)
        h = self.trunk(torch.cat([x, self.direction(inputs["direction"].long()), mission, self.hints(inputs["hint"].long()), self.ages(age)], -1))
        return self.head(h), h

    def save_pretrained(self, directory, **_) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / WEIGHTS)
        (directory / CONFIG).write_text(json.dumps({"model_type": self.model_type, **vars(self.config)}, indent=1))


NETS = {"babyai-net": BabyAINet}
TYPES = {cls.model_type: cls for cls in NETS.values()}


def _saved_type(spec: str) -> str | None:
    path = Path(spec).expanduser() / CONFIG
    try:
        return json.loads(path.read_text()).get("model_type") if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def is_net(spec: str) -> bool:
    """Whether a policy spec names a network player: a registered name or a directory one was saved to."""
    return spec in NETS or _saved_type(spec) in TYPES


def load_net_policy(config: PolicyConfig) -> NetPolicy:
    """A new network (initialised from torch's global RNG, which the driver seeds) or a saved one."""
    if config.lora is not None or config.dtype != "float32" or config.compute_dtype != "float32":
        raise ModelError(f"model {config.model!r} is a network player: it takes no lora and runs in float32")
    if config.model in NETS:
        from langgame.games.babyai import NET_CONFIG  # the observation encoding the network reads

        model = NETS[config.model](NET_CONFIG)
    else:
        directory = Path(config.model).expanduser()
        saved = json.loads((directory / CONFIG).read_text())
        model = TYPES[saved.pop("model_type")](saved)
        try:
            model.load_state_dict(load_file(directory / WEIGHTS))
        except (OSError, RuntimeError) as e:
            raise ModelError(f"{directory / WEIGHTS}: cannot load the network's weights: {str(e).splitlines()[0]}") from None
    return NetPolicy(model.to(resolve_device(config.device)), config.model)


def _tensors(inputs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in inputs.items()}


@dataclass
class NetPolicy:
    """A network player's policy pi(a|s): one action (one token, no end-of-turn token) per turn."""

    model: torch.nn.Module
    name: str
    tokenizer: None = None
    adapter: None = None
    compute_dtype: torch.dtype = torch.float32
    pad_id: int = 0

    version = Policy.version  # optimizer steps taken on the model
    device = Policy.device

    def autocast(self):
        return contextlib.nullcontext()

    def activated(self, model: torch.nn.Module | None = None):
        return contextlib.nullcontext()

    def encode(self, view: StepView) -> Rendered:
        """Token 0 is the initial state; token t + 1 is action t, taken in the state of input row t."""
        n = len(view.actions)
        return Rendered(
            ids=np.asarray([self.pad_id, *view.actions], dtype=np.int64),
            owner=np.asarray([0] + [view.player] * n, dtype=np.int8),
            turn=np.asarray([-1, *view.turns], dtype=np.int32),
            thought=np.zeros(n + 1, dtype=bool),
            inputs=view.inputs,
        )

    @torch.no_grad()
    def sample(self, views: list[StepView], sampling, generator: torch.Generator, backend=None) -> list:
        """One action per view, from softmax(logits / T) (top_p applies); the rollout backend is not used."""
        from langgame.rollout import Generation, sample_logits

        current = {k: np.stack([v.inputs[k][-1] for v in views]) for k in views[0].inputs}
        was_training = self.model.training
        self.model.eval()
        logits, _ = self.model(_tensors(current, self.device))
        self.model.train(was_training)
        ids, logp = sample_logits(logits, sampling, generator)
        return [Generation([a], [lp], False) for a, lp in zip(ids.tolist(), logp.tolist())]

    def decode(self, tokens: list[int], truncated: bool) -> str:
        return self.model.config.actions[tokens[0]]

    def forward(self, batch: Batch, where: torch.Tensor, entropy: bool = False, hidden: bool = False,
                temperature: float | torch.Tensor = 1.0, guide: bool = False) -> Forward:
        """log pi(a_t|s_t) [B, T] of the actions batch.ids[:, 1:] at the `where` positions (0 elsewhere);
        entropy, hidden [B, T, H] and guide (-log pi(hint action), KL to a one-hot teacher
        suggestion, at steps where a hint was just given) on request."""
        actions = batch.ids[:, 1:]
        logits, h = self.model({k: v[where] for k, v in batch.inputs.items()})
        if torch.is_tensor(temperature):
            temperature = temperature.to(logits.device)[:, None].expand(actions.shape)[where][:, None]
        logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)

        def scatter(values: torch.Tensor) -> torch.Tensor:
            out = values.new_zeros((*actions.shape, *values.shape[1:]))
            out[where] = values
            return out

        out = Forward(scatter(logp_all.gather(-1, actions[where][:, None]).squeeze(-1)))
        if entropy:
            out.entropy = scatter(-(logp_all.exp() * logp_all).sum(-1))
        if hidden:
            out.hidden = scatter(h)
        if guide:
            hint, age = batch.inputs["hint"][where].long(), batch.inputs["hint_age"][where]
            given = (hint > 0) & (age == 0)
            ce = -logp_all.gather(-1, (hint - 1).clamp(min=0)[:, None]).squeeze(-1)
            out.guide = scatter(torch.where(given, ce, torch.zeros_like(ce)))
        return out

