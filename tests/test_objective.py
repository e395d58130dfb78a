"""One objective, three weightings: pre-training, SFT and RL differ only by w_t."""

import copy

import pytest
import torch
from conftest import dialogue

from langgame.algos.base import Experience
from langgame.algos.bc import BehaviourCloning
from langgame.config import OptimConfig
from langgame.game import Episode, Turn
from langgame.learner import Learner
from langgame.models import Policy, tiny_random_model
from langgame.objective import (
    collate,
    log_visit_prob,
    loss,
    policy_forward,
    player_nll,
    pretrain_weights,
    shared_prefix,
    sft_weights,
    token_logprobs,
)


def stepwise_logprobs(model, ids):
    """log pi(a_t|s_t) by scoring every prefix separately: the definition, with no shifting tricks."""
    out = []
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits = model(input_ids=torch.as_tensor(ids[None, : t + 1])).logits[0, -1]
            out.append(torch.log_softmax(logits, -1)[ids[t + 1]].item())
    return torch.tensor(out)


@pytest.fixture
def batch(tiny):
    return collate([tiny.render(dialogue()), tiny.render(Episode([Turn(1, "Hi"), Turn(2, "Hello")]))], tiny.tokenizer.pad_token_id)


def test_token_logprobs_equal_stepwise_scoring(tiny, batch):
    r = tiny.render(dialogue())
    expected = stepwise_logprobs(tiny.model, r.ids)
    with torch.no_grad():
        got = token_logprobs(tiny.model, batch.ids, batch.attention)[0, : len(expected)]
        only_p2 = token_logprobs(tiny.model, batch.ids, batch.attention, where=batch.owner == 2)[0, : len(expected)]
    assert torch.allclose(got, expected, atol=1e-5)
    p2 = batch.owner[0, : len(expected)] == 2
    assert torch.allclose(only_p2[p2], expected[p2], atol=1e-5)
    assert torch.all(only_p2[~p2] == 0)


def test_a_prefix_all_rows_share_is_computed_once_with_the_same_outputs_and_gradients(tiny, monkeypatch):
    import langgame.objective as objective

    system = "You play a game with long rules that every episode shares. " * 2
    episodes = [Episode([Turn(0, system), Turn(1, q), Turn(2, a)]) for q, a in (("Hi", "Hello"), ("Move?", "Left"), ("Why", "Because so"))]
    batch = collate([tiny.render(e) for e in episodes], tiny.tokenizer.pad_token_id)
    where = batch.owner == 2
    assert shared_prefix(batch.ids, batch.attention, where) >= objective.SHARED_MIN
    lengths = []
    hook = tiny.model.model.embed_tokens.register_forward_hook(lambda m, args, out: lengths.append(tuple(args[0].shape)))

    def run():
        tiny.model.zero_grad()
        out = policy_forward(tiny.model, batch.ids, batch.attention, where, entropy=True, hidden=True, temperature=torch.tensor([1.0, 0.7, 1.3]))
        (out.logp.sum() + out.entropy.sum() + out.hidden[where].sum()).backward()
        return [out.logp.detach(), out.entropy.detach(), out.hidden.detach()], [q.grad.clone() for q in tiny.model.parameters()]

    shared, grads = run()
    p = shared_prefix(batch.ids, batch.attention, where)
    assert lengths == [(1, p), (3, batch.ids.shape[1] - p)]  # the prefix once, then every row's rest
    monkeypatch.setattr(objective, "SHARED_MIN", 10**9)
    full, grads_full = run()
    hook.remove()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared, full))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(grads, grads_full))  # float32 sums in another order
    assert (shared[0][:, :p] == 0).all() and not where[:, :p].any()  # nothing scored inside the prefix


def test_gradient_checkpointing_gives_the_same_values_and_gradients_without_the_prefix_cache(tiny):
    from langgame.config import PolicyConfig
    from langgame.models import load_policy

    recomputing = load_policy(PolicyConfig(model="tiny-random", gradient_checkpointing=True)).model
    assert recomputing.is_gradient_checkpointing and not tiny.model.is_gradient_checkpointing
    system = "You play a game with long rules that every episode shares. " * 2
    episodes = [Episode([Turn(0, system), Turn(1, q), Turn(2, a)]) for q, a in (("Hi", "Hello"), ("Move?", "Left"))]
    batch = collate([tiny.render(e) for e in episodes], tiny.tokenizer.pad_token_id)
    where = batch.owner == 2

    def run(model):
        lengths = []
        hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: lengths.append(tuple(args[0].shape)))
        model.train()
        model.zero_grad()
        out = policy_forward(model, batch.ids, batch.attention, where, entropy=True)
        (out.logp.sum() + out.entropy.sum()).backward()
        model.eval()
        with torch.no_grad():
            policy_forward(model, batch.ids, batch.attention, where)
        hook.remove()
        return out.logp.detach(), [q.grad.clone() for q in model.parameters()], lengths

    logp, grads, lengths = run(recomputing)
    logp_kept, grads_kept, _ = run(tiny.model)
    assert torch.allclose(logp, logp_kept, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(grads, grads_kept))
    # training: the full rows (checkpointed layers take no KV cache); scoring (eval): the shared prefix once
    full, p = tuple(batch.ids.shape), shared_prefix(batch.ids, batch.attention, where)
    assert lengths == [full, (1, p), (2, full[1] - p)]


def test_weightings_select_the_right_tokens(batch):
    owner = batch.owner
    w, m = pretrain_weights(owner)
    assert torch.equal(w, (owner > 0).float()) and torch.equal(m, w)
    w, m = sft_weights(owner, 2)
    assert torch.equal(w, (owner == 2).float()) and torch.equal(m, w)
    w, m = sft_weights(owner, 1)
    assert torch.equal(w, (owner == 1).float())
    # context and template tokens are never weighted, in any stage
    assert torch.all(pretrain_weights(owner)[0][owner == 0] == 0)


def rl_weights(owner, learner, advantages):
    """Eq. 9: w_t = A_t on the learner's tokens (what algos/ put in exp.advantages * exp.mask)."""
    m = (owner == learner).float()
    return advantages * m, m


def test_one_loss_gives_the_three_stages(tiny, batch):
    with torch.no_grad():
        logp = token_logprobs(tiny.model, batch.ids, batch.attention)
    nll = player_nll(logp, batch.owner)
    (s1, n1), (s2, n2) = nll[1], nll[2]
    assert float(loss(logp, *pretrain_weights(batch.owner))) == pytest.approx((s1 + s2) / (n1 + n2), rel=1e-6)
    assert float(loss(logp, *sft_weights(batch.owner, 2))) == pytest.approx(s2 / n2, rel=1e-6)
    assert float(loss(logp, *sft_weights(batch.owner, 1))) == pytest.approx(s1 / n1, rel=1e-6)
    # RL with a constant advantage c is c times behaviour cloning of the sampled tokens
    ones = torch.full(batch.owner.shape, 2.5)
    assert float(loss(logp, *rl_weights(batch.owner, 2, ones))) == pytest.approx(2.5 * s2 / n2, rel=1e-6)


def test_rl_gradient_is_the_policy_gradient(tiny):
    """grad of the loss with w_t = A_t equals -(1/n) sum_t A_t grad log pi(a_t|s_t) (eq. 9), token by token."""
    r = tiny.render(Episode([Turn(1, "Q?"), Turn(2, "An answer.")]))
    b = collate([r], tiny.tokenizer.pad_token_id)
    advantages = torch.linspace(-1.0, 2.0, b.owner.shape[1])[None]
    params = [p for p in tiny.model.parameters()]
    logp = token_logprobs(tiny.model, b.ids, b.attention)
    grads = torch.autograd.grad(loss(logp, *rl_weights(b.owner, 2, advantages)), params)
    positions = torch.nonzero(b.owner[0] == 2).flatten().tolist()
    expected = [torch.zeros_like(p) for p in params]
    for t in positions:
        logp_t = token_logprobs(tiny.model, b.ids, b.attention)[0, t]
        for e, g in zip(expected, torch.autograd.grad(logp_t, params)):
            e -= advantages[0, t] * g / len(positions)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, atol=1e-6)


def test_gradient_accumulation_equals_one_big_batch(tiny):
    rendered = [tiny.render(dialogue()), tiny.render(Episode([Turn(1, "Hi"), Turn(2, "Hello there")]))]
    pad = tiny.tokenizer.pad_token_id
    # eps >> |g| makes Adam's first step lr * g / eps: linear in the gradient, so the two must agree
    cfg = OptimConfig(lr=10.0, eps=10.0, max_grad_norm=None)
    a = Policy(copy.deepcopy(tiny.model), tiny.tokenizer, "a", tiny.eot_token)
    b = Policy(copy.deepcopy(tiny.model), tiny.tokenizer, "b", tiny.eot_token)

    def sft(batches):
        return [Experience(x, mask=sft_weights(x.owner, 2)[1], advantages=sft_weights(x.owner, 2)[0]) for x in batches]

    Learner(a, cfg, 10).update(sft([collate(rendered, pad)]), BehaviourCloning())
    Learner(b, cfg, 10).update(sft([collate([r], pad) for r in rendered]), BehaviourCloning())
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_log_visit_prob_sums_each_players_own_policy(tiny):
    other = tiny_random_model(len(tiny.tokenizer), seed=1)
    r = tiny.render(dialogue())
    b = collate([r], tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        got = log_visit_prob({1: other, 2: tiny.model}, b)
    mine, theirs = stepwise_logprobs(tiny.model, r.ids), stepwise_logprobs(other, r.ids)
    owner = torch.as_tensor(r.owner[1:])
    expected = theirs[owner == 1].sum() + mine[owner == 2].sum()
    assert float(got[0]) == pytest.approx(float(expected), abs=1e-4)
    # a different profile gives a different probability of the same episode
    with torch.no_grad():
        assert abs(float(log_visit_prob({1: tiny.model, 2: tiny.model}, b)[0]) - float(got[0])) > 1e-3


def _arith(n, offset):
    return [
        Episode([Turn(1, f"What is {a} plus {a % 7}?"), Turn(2, f"{a + a % 7}.")])
        for a in range(offset, offset + n)
    ]


def test_pretrain_weighting_learns_player_one_sft_does_not(tiny):
    """Same data, same steps: pre-training weighting clones both players; SFT only player two."""
    pad = tiny.tokenizer.pad_token_id
    train = [tiny.render(e) for e in _arith(48, 10)]
    held_out = collate([tiny.render(e) for e in _arith(16, 200)], pad)

    def p_nll(model):
        with torch.no_grad():
            logp = token_logprobs(model, held_out.ids, held_out.attention)
        return {p: s / n for p, (s, n) in player_nll(logp, held_out.owner).items()}

    before = p_nll(tiny.model)
    after = {}
    for stage, weigh in (("pretrain", pretrain_weights), ("sft", sft_weights)):
        torch.manual_seed(0)
        policy = Policy(copy.deepcopy(tiny.model), tiny.tokenizer, stage, tiny.eot_token)
        learner = Learner(policy, OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant"), 60)
        for step in range(60):
            batch = collate([train[(step * 8 + i) % len(train)] for i in range(8)], pad)
            w, m = weigh(batch.owner, 2)
            learner.update(Experience(batch, mask=m, advantages=w), BehaviourCloning())
        after[stage] = p_nll(policy.model)
    # both learn player two
    assert after["pretrain"][2] < before[2] - 1.0 and after["sft"][2] < before[2] - 1.0
    # only pre-training weighting learns the user's (player one's) tokens
    assert after["pretrain"][1] < before[1] - 1.5
    assert after["sft"][1] > after["pretrain"][1] + 1.0
