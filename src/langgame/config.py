"""Typed run configs, loaded from YAML. An unknown key or a wrong type is a one-line error naming it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from langgame.errors import LanggameError


class ConfigError(LanggameError):
    """A config file that cannot be read or does not validate."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sampling(Strict):
    """Sampling settings of one player. max_new_tokens bounds a turn; longer turns are cut and marked truncated."""

    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0)


class LoraSettings(Strict):
    """A LoRA adapter (peft). target_modules: module names, or 'all-linear'."""

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class PolicyConfig(Strict):
    """Which model plays: a shipped name, a local directory, a hub id, or 'tiny-random'."""

    model: str = "smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16"] = "float32"
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="autocast precision of forward passes; bfloat16 is ~2x faster on CPUs with AVX512-BF16 or AMX"
    )
    lora: LoraSettings | None = None
    eot_token: str | None = Field(None, description="end-of-turn token; default: the tokenizer's eos token")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto (cuda when available, else cpu), cpu, cuda or cuda:N: weights, KV cache, reference and heads")
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass instead of keeping them: a learner's "
        "memory for long or many rows drops to about one layer's, for about a third more compute (language models only)")


class OptimConfig(Strict):
    """AdamW with linear warmup then a cosine, linear or constant schedule."""

    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)


class AlgoConfig(Strict):
    """The learning rule (reinforce = RLOO, ppo) and its regularisers.

    kl_estimator k1 or k3 (Schulman), applied as a per-token reward penalty (kl_in: reward, the
    classic RLHF form) or as a loss term (kl_in: loss, as in GRPO). entropy_coef adds a bonus.
    """

    name: Literal["reinforce", "ppo"] = "reinforce"
    group_size: int = Field(4, gt=0, description="episodes per initial context; RLOO's baseline is the mean of the others")
    baseline: Literal["group", "game", "batch"] = Field("group", description="reinforce: the baseline of an episode is the mean "
                                                         "return of the other episodes of its role and of the same initial context "
                                                         "(group), the same game of a mixture (game), or the whole batch (batch)")
    scale_advantages: bool = False
    kl_coef: float = Field(0.0, ge=0)
    kl_estimator: Literal["k1", "k3"] = "k3"
    kl_in: Literal["reward", "loss"] = "loss"
    entropy_coef: float = Field(0.0, ge=0)
    clip: float = Field(0.2, gt=0, description="ppo: ratio clip epsilon")
    epochs: int = Field(1, gt=0, description="ppo: passes over each batch of experience")
    gamma: float = Field(1.0, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    value_coef: float = Field(0.5, ge=0)
    value_clip: float = Field(0.2, gt=0)
    tis_cap: float | None = Field(None, gt=0, description="truncated importance sampling: weight each advantage by "
                                  "min(pi_learner / pi_engine, tis_cap) of the sampled token (vllm rollouts); None: off")
    guide_coef: float = Field(0.0, ge=0, description="weight of KL(teacher's suggested action || pi) at the steps where a "
                              "teacher's hint suggests one (network players such as the BabyAI student; LLM4Teach)")
    guide_decay_steps: int = Field(0, ge=0, description="anneal guide_coef linearly to 0 over this many optimizer steps; 0: constant")


class DataConfig(Strict):
    """Episode logs in Parquet (see `langgame data prepare`); paths are relative to the working directory."""

    train: Path
    eval: Path | None = None
    max_length: int = Field(512, gt=1)
    eval_episodes: int = Field(256, gt=0)


class TrainConfig(Strict):
    """`langgame train`: behaviour cloning by the one weighted log-likelihood objective.

    stage: pretrain (w=1 on both players' tokens) or sft (w=1 on the learner's tokens only).
    reward_weighted: w_t is further multiplied by the learner's reward of the token's turn, so a turn with
    reward -1 is pushed away (gradient ascent: unlearning, Yao et al. 2023) and one with +1 is cloned.
    kl_coef: KL(pi || pi_initial) (k3, a loss term) on the tokens cloned with w > 0.
    """

    stage: Literal["pretrain", "sft"]
    learner: Literal[1, 2] = 2
    reward_weighted: bool = False
    kl_coef: float = Field(0.0, ge=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; default: torch's choice")
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    batch_size: int = Field(8, gt=0, description="episodes per optimizer step")
    micro_batch_size: int | None = Field(None, gt=0, description="episodes per forward pass; default batch_size")
    max_steps: int = Field(100, gt=0)
    eval_every: int = Field(0, ge=0, description="steps between held-out evaluations; 0: only at start and end")
    save_every: int = Field(0, ge=0, description="steps between checkpoints; 0: only at the end")
    time_budget_s: float | None = Field(None, gt=0, description="stop after this many seconds of steps (then evaluate, save, finish)")
    keep_checkpoints: int = Field(2, gt=0)
    run_dir: Path = Path("runs/train")

    @model_validator(mode="after")
    def _micro_divides_batch(self) -> TrainConfig:
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"micro_batch_size ({mb}) must divide batch_size ({self.batch_size})")
        return self


class PlayerConfig(Strict):
    """One player of a rollout: a policy with its sampling settings, or (policy: null) the game's scripted
    policy. algo / optim: this player's own learning rule and optimizer when it learns (default: the run's),
    e.g. PPO for an RL student beside REINFORCE for an LLM teacher."""

    policy: PolicyConfig | None = None
    sampling: Sampling = Sampling()
    algo: AlgoConfig | None = None
    optim: OptimConfig | None = None


class GameConfig(Strict):
    """A game by registry name, with its own options (validated by the game)."""

    name: str
    options: dict[str, Any] = {}


class RolloutConfig(Strict):
    """Which engine samples the players' turns: hf (transformers, KV-cached, in the learner's process)
    or vllm (a vLLM engine per policy, weights pushed after every update; `make install-vllm`)."""

    backend: Literal["hf", "vllm"] = "hf"


class ScheduleConfig(Strict):
    """Who learns when (schedule.py): simultaneous, alternating (player2_steps of player 2, then
    player1_steps of player 1, as in GPO) or population (each learner against a past checkpoint of the other)."""

    kind: Literal["simultaneous", "alternating", "population"] = "simultaneous"
    player2_steps: int = Field(1, gt=0)
    player1_steps: int = Field(1, gt=0)


class RLConfig(Strict):
    """`langgame train` with stage: rl — players learn by policy gradient in a game (sections 4.4-4.7).

    learners: the players that learn ([2]: RLHF against a fixed player 1; [1, 2]: both, e.g.
    red-team self-play). sharing, when both learn: separate (two models, two optimizers), lora (one
    frozen base, one LoRA adapter and optimizer per player, swapped per turn) or shared (one set of
    weights for both roles; the role is given by the prompt). Every step draws `scenarios_per_step`
    initial contexts from the game's train split, plays `algo.group_size` episodes from each, judges
    them and takes `algo.epochs` optimizer steps per learner.
    """

    stage: Literal["rl"]
    learners: list[Literal[1, 2]] = [2]
    sharing: Literal["separate", "lora", "shared"] = "separate"
    schedule: ScheduleConfig = ScheduleConfig()
    seed: int = 0
    threads: int | None = Field(None, gt=0)
    game: GameConfig
    player1: PlayerConfig = PlayerConfig()
    player2: PlayerConfig = PlayerConfig(policy=PolicyConfig())
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    rollout: RolloutConfig = RolloutConfig()
    engine: Literal["local", "ray"] = Field("local", description="local: one process; ray: each model's seats in a Ray actor")
    scenarios_per_step: int = Field(8, gt=0)
    micro_batch_size: int = Field(8, gt=0, description="episodes per forward/backward pass")
    max_steps: int = Field(50, gt=0)
    eval_every: int = Field(0, ge=0)
    eval_scenarios: int = Field(64, gt=0, description="held-out initial contexts per evaluation (eval split)")
    eval_initial: bool = Field(True, description="when both players learn, also evaluate each learner's initial policy "
                               "against the other's current one (eval_initial_p<i>/...); false where that says nothing new")
    save_every: int = Field(0, ge=0)
    save_train_episodes_every: int = Field(0, ge=0, description="steps between writing the step's played episodes to "
                                           "episodes/train_step<N>.parquet (what the players wrote in training); 0: never")
    time_budget_s: float | None = Field(None, gt=0, description="stop after this many seconds of steps (then evaluate, save, finish)")
    keep_checkpoints: int = Field(2, gt=0)
    run_dir: Path = Path("runs/rl")

    @model_validator(mode="after")
    def _consistent(self) -> RLConfig:
        if not self.learners or len(set(self.learners)) != len(self.learners):
            raise ValueError(f"learners must name player 1 and/or 2 once each, got {self.learners}")
        for p in self.learners:
            if (self.player1 if p == 1 else self.player2).policy is None:
                raise ValueError(f"player{p} is a learner, so it needs a policy (it is scripted)")
        both = sorted(self.learners) == [1, 2]
        if self.sharing != "separate":
            if not both:
                raise ValueError(f"sharing: {self.sharing} needs both players to learn (learners: [1, 2])")
            a, b = self.player1.policy, self.player2.policy
            if self.sharing == "shared" and a != b:
                raise ValueError("sharing: shared needs player1.policy and player2.policy to be identical")
            if self.sharing == "lora" and (a.model, a.dtype, a.compute_dtype) != (b.model, b.dtype, b.compute_dtype):
                raise ValueError("sharing: lora needs both players on the same base (policy.model, dtype, compute_dtype)")
        for p, player in ((1, self.player1), (2, self.player2)):
            if player.algo is not None and player.algo.group_size != self.algo.group_size:
                raise ValueError(f"player{p}.algo.group_size: episodes per initial context are the run's (algo.group_size)")
        if self.sharing != "separate" and (self.algo_of(1), self.optim_of(1)) != (self.algo_of(2), self.optim_of(2)):
            raise ValueError(f"sharing: {self.sharing} trains one model for both players: their algo and optim must be the same")
        if self.schedule.kind != "simultaneous" and not both:
            raise ValueError(f"schedule: {self.schedule.kind} needs both players to learn (learners: [1, 2])")
        if self.schedule.kind == "population" and not self.save_every:
            raise ValueError("schedule: population samples past checkpoints, so it needs save_every > 0")
        return self

    def algo_of(self, player: int) -> AlgoConfig:
        """Player `player`'s learning rule: its own algo, else the run's."""
        return (self.player1 if player == 1 else self.player2).algo or self.algo

    def optim_of(self, player: int) -> OptimConfig:
        return (self.player1 if player == 1 else self.player2).optim or self.optim


class SelfPlayConfig(Strict):
    """`langgame train` with stage: selfplay — both players of an OpenSpiel game learn from exact values.

    algo (algos/mmd.py): pg (the mirror-descent / softmax policy-gradient step), mmd (the same
    plus alpha KL to a magnet: magnetic mirror descent) or fp (fictitious play: each player
    improves against the other's average policy; the average is what converges). Each step
    computes the target policy and fits the LMs to it with `fit_steps` optimizer steps.
    schedule: both players update every step (simultaneous) or they take turns,
    `alternate_every` steps each (alternating). sharing: one model plays both seats (shared) or
    each seat has its own (separate).
    """

    stage: Literal["selfplay"]
    game: str = "kuhn_poker"
    text: Literal["full", "compact"] = "full"
    seed: int = 0
    threads: int | None = Field(None, gt=0)
    policy: PolicyConfig = PolicyConfig(model="tiny-random")
    sharing: Literal["separate", "shared"] = "separate"
    schedule: Literal["simultaneous", "alternating"] = "simultaneous"
    alternate_every: int = Field(1, gt=0)
    algo: Literal["pg", "mmd", "fp"] = "mmd"
    alpha: float = Field(0.05, ge=0, description="mmd: weight of KL(pi || magnet)")
    eta: float = Field(1.0, gt=0, description="mirror-descent step size in policy space")
    magnet: Literal["uniform", "initial"] = "uniform"
    fit_steps: int = Field(1, gt=0, description="optimizer steps fitting the LMs to each step's target")
    optim: OptimConfig = OptimConfig(lr=1e-3, schedule="constant")
    micro_batch_size: int = Field(64, gt=0, description="sequences (state, action word) per forward pass")
    max_steps: int = Field(200, gt=0)
    eval_every: int = Field(10, gt=0, description="steps between exact exploitability evaluations")
    save_every: int = Field(0, ge=0)
    time_budget_s: float | None = Field(None, gt=0, description="stop after this many seconds of steps (then evaluate, save, finish)")
    keep_checkpoints: int = Field(2, gt=0)
    run_dir: Path = Path("runs/selfplay")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 (no dot) as a float, as users write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return raw


def validate(cls: type[BaseModel], raw: dict, where: str):
    """Build `cls` from a dict; the error names the first offending key on one line."""
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        got = f", got {err['input']!r}" if err["type"] not in ("extra_forbidden", "missing") else ""
        raise ConfigError(f"{where}: {key}: {msg}{got}{more}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a mapping")
        node[leaf] = yaml.load(value, Loader=_Loader)
    return raw


STAGES = {"pretrain": TrainConfig, "sft": TrainConfig, "rl": RLConfig, "selfplay": SelfPlayConfig}


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig | RLConfig | SelfPlayConfig:
    """A `langgame train` config, typed by its stage."""
    raw = apply_overrides(load_yaml(path), list(overrides))
    if raw.get("stage") not in STAGES:
        raise ConfigError(f"{path}: stage: expected one of {', '.join(STAGES)}, got {raw.get('stage')!r}")
    return validate(STAGES[raw["stage"]], raw, str(path))
