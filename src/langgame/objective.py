"""The one training objective: loss = -sum_t w_t log pi(a_t|s_t) / sum_t m_t.

Pre-training (eq. 7), SFT (eq. 8) and policy-gradient RL (eq. 9) differ only in the weights w_t
(and the support mask m_t that normalises them). Tensors are [B, T] over action positions: entry t
is the action a_t = ids[:, t+1] taken in state s_t = ids[:, :t+1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from langgame.game import Rendered


@dataclass
class Batch:
    """Rendered episodes, right-padded. ids, attention: [B, T+1]; owner, turn, thought: [B, T] per action;
    inputs: a non-LM player's input in the state before each action, {name: [B, T, ...]} (else None)."""

    ids: torch.Tensor
    attention: torch.Tensor
    owner: torch.Tensor
    turn: torch.Tensor
    thought: torch.Tensor
    inputs: dict[str, torch.Tensor] | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.attention.sum())


PAD_MULTIPLE = 16


def collate(rendered: list[Rendered], pad_id: int, max_length: int | None = None) -> Batch:
    """Right-pad rendered episodes (cut to max_length tokens) into one batch of action positions.

    The width is rounded up to a multiple of PAD_MULTIPLE: bf16 matmuls on CPU (oneDNN) compile
    a kernel per shape, and repeating shapes hit its cache.
    """
    rendered = [Rendered(r.ids[:max_length], r.owner[:max_length], r.turn[:max_length], r.thought[:max_length],
                         r.inputs and {k: v[:max_length] for k, v in r.inputs.items()}) for r in rendered]
    length = -(-max(len(r) for r in rendered) // PAD_MULTIPLE) * PAD_MULTIPLE
    b = len(rendered)
    ids = np.full((b, length), pad_id, dtype=np.int64)
    attention = np.zeros((b, length), dtype=np.int64)
    owner = np.zeros((b, length), dtype=np.int64)
    turn = np.full((b, length), -1, dtype=np.int64)
    thought = np.zeros((b, length), dtype=bool)
    for i, r in enumerate(rendered):
        n = len(r)
        ids[i, :n], attention[i, :n] = r.ids, 1
        owner[i, :n], turn[i, :n], thought[i, :n] = r.owner, r.turn, r.thought
    inputs = None
    if rendered[0].inputs is not None:  # the state before action t is row t of a rendered episode
        inputs = {}
        for k, first in rendered[0].inputs.items():
            x = np.zeros((b, length - 1, *first.shape[1:]), dtype=first.dtype)
            for i, r in enumerate(rendered):
                x[i, : len(r) - 1] = r.inputs[k][: len(r) - 1]
            inputs[k] = torch.from_numpy(x)
    t = torch.from_numpy
    return Batch(t(ids), t(attention), t(owner[:, 1:]), t(turn[:, 1:]), t(thought[:, 1:]), inputs)


@dataclass
class Forward:
    """Per-action outputs of one forward pass, all [B, T] (hidden: [B, T, H], the state s_t before a_t)."""

    logp: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    guide: torch.Tensor | None = None  # KL(a teacher's suggested action || pi) where a player is given one, else 0


SHARED_MIN = 16  # tokens: a shorter prefix common to every row is not worth its own forward pass


def policy_forward(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    where: torch.Tensor | None = None,
    entropy: bool = False,
    hidden: bool = False,
    temperature: float | torch.Tensor = 1.0,
    past: DynamicCache | None = None,
) -> Forward:
    """log pi(a_t|s_t) for every action position of [B, T+1] ids, and optionally entropy and hidden states.

    temperature: the policy is softmax(logits / temperature), the distribution a player samples
    from (as TRL does), so that training at a sampling temperature != 1 stays on-policy; a [B]
    tensor gives each row its own (both roles of a shared model).

    where: optional [B, T] bool; only those positions go through the LM head (the rest are 0),
    which saves most of the head's cost on context tokens or on the other player's turn. Logits
    are upcast to float32 and reduced with logsumexp and a gather, never a full log_softmax.

    The tokens that every row begins with before its first position in `where` (a system prompt,
    a game's rules: `shared_prefix`), if at least SHARED_MIN, are computed once for the whole batch
    and the rows continue from their KV cache; the values and gradients are those of the full pass.
    Not while training with gradient checkpointing, whose recomputed layers take no cache.

    past: the KV cache of tokens that precede every row (prefix_cache: computed once by the caller, e.g.
    a game's rules before the prompts of many micro-batches); ids, attention and where then hold only
    what follows them.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap a peft model
    where = torch.ones_like(ids[:, 1:], dtype=torch.bool) if where is None else where
    shared = shared_prefix(ids, attention, where) if caches(lm) and len(ids) > 1 else 0
    if shared < SHARED_MIN:
        return _forward(model, lm, ids, attention, where, entropy, hidden, temperature, expand_cache(past, len(ids)))
    prefix = lm.base_model(input_ids=ids[:1, :shared], past_key_values=expand_cache(past, 1), use_cache=True)
    cache = expand_cache(prefix.past_key_values, len(ids))
    out = _forward(model, lm, ids[:, shared:], attention[:, shared:], where[:, shared:], entropy, hidden, temperature, cache)

    def pad(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.cat([x.new_zeros(len(ids), shared), x], dim=1)

    states = torch.cat([prefix.last_hidden_state.expand(len(ids), -1, -1), out.hidden], dim=1) if hidden else None
    return Forward(pad(out.logp), pad(out.entropy), states)


def caches(lm: torch.nn.Module) -> bool:
    """Whether policy_forward continues a KV cache on this (unwrapped) model: not with a softcapped or scaled head,
    nor while training with gradient checkpointing, whose recomputed layers take no cache."""
    softcapped = getattr(lm.config, "final_logit_softcapping", None) or getattr(lm.config, "logit_scale", None)
    return not softcapped and not (lm.training and getattr(lm, "is_gradient_checkpointing", False))


def prefix_cache(model: torch.nn.Module, ids: torch.Tensor) -> DynamicCache | None:
    """The KV cache of [1, P] ids, for policy_forward's `past`; None where it is not worth one (P < SHARED_MIN)
    or the model continues no cache (`caches`)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if ids.shape[1] < SHARED_MIN or not caches(lm):
        return None
    return lm.base_model(input_ids=ids, use_cache=True).past_key_values


def expand_cache(cache: DynamicCache | None, n: int) -> DynamicCache | None:
    """A new cache of n rows, each a view of the one-row cache (continuing it leaves that cache as it was)."""
    return None if cache is None else DynamicCache([(c.keys.expand(n, -1, -1, -1), c.values.expand(n, -1, -1, -1)) for c in cache.layers])


def shared_prefix(ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor) -> int:
    """How many leading tokens of [B, T+1] ids every row has in common (unpadded), before the first
    position of any row in the [B, T] `where` (and before the last action)."""
    same = ((ids == ids[:1]) & (attention > 0)).all(0).long().cumprod(0).sum()
    scored = where.any(0)
    first = int(scored.long().argmax()) if scored.any() else where.shape[1]
    return min(int(same), first, where.shape[1] - 1)


def _forward(model, lm, ids, attention, where, entropy, hidden, temperature, cache: DynamicCache | None = None) -> Forward:
    """policy_forward's pass over ids, continuing a prefix's KV cache if given (attention then covers it too)."""
    actions = ids[:, 1:]
    extra = {"use_cache": False} if cache is None else {"past_key_values": cache}  # no cache to keep for later
    if cache is not None:
        attention = torch.cat([attention.new_ones(len(ids), cache.get_seq_length()), attention], dim=1)
    if getattr(lm.config, "final_logit_softcapping", None) or getattr(lm.config, "logit_scale", None):
        out = model(input_ids=ids, attention_mask=attention, output_hidden_states=hidden, **extra)  # head transforms logits
        logits = out.logits[:, :-1][where].float()
        states = out.hidden_states[-1][:, :-1] if hidden else None
    else:
        states = lm.base_model(input_ids=ids, attention_mask=attention, **extra).last_hidden_state[:, :-1]
        logits = lm.get_output_embeddings()(states[where]).float()
    if torch.is_tensor(temperature):
        temperature = temperature.to(logits.device)[:, None].expand(actions.shape)[where][:, None]
    logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, actions[where].unsqueeze(-1)).squeeze(-1) - lse

    def scatter(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(actions.shape, dtype=values.dtype, device=values.device)
        out[where] = values
        return out

    ent = None
    if entropy:
        probs = torch.softmax(logits, dim=-1)
        ent = scatter(lse - (probs * logits).sum(-1))
    return Forward(scatter(picked), ent, states if hidden else None)


def token_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor | None = None
) -> torch.Tensor:
    """log pi(a_t|s_t): [B, T+1] ids -> [B, T] float32 (see policy_forward)."""
    return policy_forward(model, ids, attention, where).logp


# --- weightings: (owner [B, T], ...) -> (w, m), both [B, T] float ---------------------------------


def pretrain_weights(owner: torch.Tensor, learner: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7, behaviour cloning of the "average" player: w_t = 1 on every token of both players."""
    m = (owner > 0).float()
    return m, m


def sft_weights(owner: torch.Tensor, learner: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8, behaviour cloning of the optimal learner: w_t = 1 on the learner's tokens only."""
    m = (owner == learner).float()
    return m, m


WEIGHTINGS = {"pretrain": pretrain_weights, "sft": sft_weights}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1 and k3). [B, T]

    k1 = log pi - log pi_ref (unbiased, can be negative); k3 = r - 1 - log r with r = pi_ref / pi
    (unbiased, always >= 0, lower variance).
    """
    if estimator == "k1":
        return logp - ref_logp
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - 1 - log_ratio


def loss(logp: torch.Tensor, w: torch.Tensor, m: torch.Tensor, normaliser: float | None = None,
         terms: dict[str, tuple[float, torch.Tensor]] | None = None) -> torch.Tensor:
    """-sum(w * log pi) / n + sum_k c_k sum(m * x_k) / n, with n = sum(m): the one place a loss is summed.

    terms: per-action regularisers {name: (c_k, x_k [B, T])} (a value error, a KL estimate, an
    entropy with c_k < 0), normalised like the policy term. Pass `normaliser` (the support of the
    whole optimizer step) under gradient accumulation.
    """
    n = m.sum().clamp(min=1.0) if normaliser is None else max(normaliser, 1.0)
    total = -(w * logp).sum() / n
    for coef, x in (terms or {}).values():
        total = total + coef * ((x * m).sum() / n)
    return total


def player_nll(logp: torch.Tensor, owner: torch.Tensor) -> dict[int, tuple[float, int]]:
    """Sum of -log pi and token count on each player's actions: {player: (nll_sum, n_tokens)}."""
    return {i: (float(-(logp * (owner == i)).sum()), int((owner == i).sum())) for i in (1, 2)}


def log_visit_prob(profile: dict[int, torch.nn.Module], batch: Batch) -> torch.Tensor:
    """log d^pi(z) (eq. 1): sum of both players' token log-probs, each scored by its own policy. [B]

    Context and template tokens are the environment's (deterministic transitions) and add nothing.
    """
    total = torch.zeros(batch.ids.shape[0])
    for player, model in profile.items():
        logp = token_logprobs(model, batch.ids, batch.attention)
        total = total + (logp * (batch.owner == player)).sum(-1)
    return total
