"""Seats: which model plays each player, which of them learn, and their references — built in one
place for every sharing mode (paper 4.6: the two players' policies).

A seat is a learning model: player1, player2, or shared (one model for both roles). sharing:
separate  one model per learning player; a LoRA learner's reference is its own base
lora      one frozen base model, one LoRA adapter (and optimizer) per player, swapped per turn;
          the base with its adapters disabled is both players' reference
shared    one set of weights for both roles, the role given by the prompt
A player that does not learn is scripted (policy: null) or a frozen policy — the learner's initial
policy when the two specs are the same model. One model's seats are built together (seat_groups),
in the driver's process or in a Ray actor (engine.py): load_players, then add_learners.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import peft
import torch

from langgame.algos import RULES
from langgame.algos.ppo import ValueHead
from langgame.checkpoint import load_checkpoint
from langgame.config import ConfigError, LoraSettings, RLConfig
from langgame.learner import Learner
from langgame.models import Policy, load_policy


def frozen(policy: Policy) -> Policy:
    """A frozen copy of a policy (the reference pi_ref, or a fixed opponent)."""
    return replace(policy, model=copy.deepcopy(policy.model).eval().requires_grad_(False))


def seat_of(player: int, sharing: str) -> str:
    return "shared" if sharing == "shared" else f"player{player}"


@dataclass
class Seats:
    """policies[p]: player p's current policy (None: scripted); initial[p]: a learner's initial policy
    (its reference; None if nothing needs it); learners: one per seat; seat[p]: player p's seat."""

    policies: dict[int, Policy | None]
    initial: dict[int, Policy | None]
    learners: dict[str, Learner]
    seat: dict[int, str]


def seat_groups(cfg: RLConfig) -> list[list[int]]:
    """The learning players of each model: sharing separate, one model per learning player; lora and
    shared, one model for both. A fixed opponent belongs with the one learner."""
    return [[p] for p in cfg.learners] if cfg.sharing == "separate" else [list(cfg.learners)]


def load_players(cfg: RLConfig, checkpoint: Path | None, players: list[int] | None = None) -> Seats:
    """Load the policies of the learning `players` (one of seat_groups; default all) from the
    checkpoint's seats when resuming, their references and, with one learner, its opponent; no
    learners yet (add_learners: loading draws from the torch RNG where a LoRA adapter is initialised,
    so every group loads before any learner's value head is made, as in one process)."""
    players = list(cfg.learners) if players is None else players
    seat = {p: seat_of(p, cfg.sharing) for p in players}
    specs = {1: cfg.player1.policy, 2: cfg.player2.policy}
    policies: dict[int, Policy | None] = {}
    initial: dict[int, Policy | None] = {}
    if cfg.sharing == "lora":
        _lora(cfg, checkpoint, policies, initial)
    else:
        _full(cfg, checkpoint, seat, specs, policies, initial)
    for p in (1, 2):
        if p not in cfg.learners:  # a fixed opponent: scripted, or a frozen policy (the learner's initial one if equal)
            spec = specs[p]
            same = [q for q in cfg.learners if initial.get(q) is not None and specs[q].model_copy(update={"lora": None}) == spec]
            policies[p] = None if spec is None else (initial[same[0]] if same else frozen(load_policy(spec)))
    return Seats(policies, initial, {}, seat)


def add_learners(seats: Seats, cfg: RLConfig, checkpoint: Path | None) -> dict:
    """One Learner per seat with the player's algo and optim (a value head when its rule needs one),
    restored from the checkpoint when resuming. Returns the checkpoint's state.json ({} for a new run)."""
    for p, name in seats.seat.items():
        if name not in seats.learners:
            policy, algo = seats.policies[p], cfg.algo_of(p)
            heads = {"value": ValueHead(policy.model.config.hidden_size).to(_device(policy))} if RULES[algo.name].needs_values else {}
            params = [x for n, x in policy.model.named_parameters() if f".{policy.adapter}." in n] if cfg.sharing == "lora" else None
            seats.learners[name] = Learner(policy, cfg.optim_of(p), cfg.max_steps * algo.epochs, heads, params, algo,
                                           seats.initial[p], cfg.micro_batch_size)
    return load_checkpoint(checkpoint, seats.learners)[0] if checkpoint is not None else {}


def _device(policy: Policy) -> torch.device:
    return next(policy.model.parameters()).device


def _needs_initial(cfg: RLConfig, p: int) -> bool:
    other, specs = 3 - p, {1: cfg.player1.policy, 2: cfg.player2.policy}
    return (cfg.algo_of(p).kl_coef > 0 or other in cfg.learners
            or (other not in cfg.learners and specs[other] == specs[p].model_copy(update={"lora": None})))


def _full(cfg: RLConfig, checkpoint: Path | None, seat: dict, specs: dict, policies: dict, initial: dict) -> None:
    for p, name in seat.items():
        spec = specs[p]
        shared = [q for q in policies if seat.get(q) == name]
        if shared:  # sharing: shared, the second role of the one model
            policies[p], initial[p] = policies[shared[0]], initial[shared[0]]
            continue
        if checkpoint is not None:
            spec = spec.model_copy(update={"model": str(checkpoint / name / "policy"), "lora": None})
        policy = policies[p] = load_policy(spec)
        wanted = _needs_initial(cfg, p) or (cfg.sharing == "shared" and _needs_initial(cfg, 3 - p))
        if specs[p].lora is not None:  # a LoRA learner's reference: its base, adapter disabled
            initial[p] = Policy(policy.model, policy.tokenizer, policy.name, policy.eot_token, policy.compute_dtype, base_only=True)
        elif wanted:
            initial[p] = frozen(load_policy(specs[p]) if checkpoint else policy)
        else:
            initial[p] = None


def _lora(cfg: RLConfig, checkpoint: Path | None, policies: dict, initial: dict) -> None:
    """sharing: lora — one frozen base model, one adapter per player, swapped per turn."""
    base_spec = cfg.player1.policy.model_copy(update={"lora": None})
    base = load_policy(base_spec)
    model = base.model
    for p in (1, 2):
        name = f"player{p}"
        if checkpoint is not None:
            directory = checkpoint / name / "policy"
            if isinstance(model, peft.PeftModel):
                model.load_adapter(directory, adapter_name=name, is_trainable=True)
            else:
                model = peft.PeftModel.from_pretrained(model, directory, adapter_name=name, is_trainable=True)
            continue
        lora = (cfg.player1 if p == 1 else cfg.player2).policy.lora or LoraSettings()
        config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.target_modules, task_type="CAUSAL_LM")
        try:
            model = peft.get_peft_model(model, config, adapter_name=name) if not isinstance(model, peft.PeftModel) else model
            if name not in model.peft_config:
                model.add_adapter(name, config)
        except ValueError as e:
            raise ConfigError(f"player{p}.policy: sharing: lora cannot wrap {base_spec.model!r}: {str(e).splitlines()[0]}") from None
        model.peft_config[name].base_model_name_or_path = base_spec.model
    model.to(_device(base))  # adapters are created on the CPU
    for p in (1, 2):
        policies[p] = Policy(model, base.tokenizer, base.name, base.eot_token, base.compute_dtype, adapter=f"player{p}")
        initial[p] = Policy(model, base.tokenizer, base.name, base.eot_token, base.compute_dtype, base_only=True)
