"""The vLLM backend (vllm_backend.py) against HFBackend and policy_forward on the shipped SmolLM2.

Both sides compute in float32, so they differ only by kernel rounding (oneDNN and vLLM's CPU
attention against ATen): measured log-prob differences are below 1e-4 nats, so TOL = 1e-3. A
wrong weight version moves them by more than 0.1 (LORA_SHIFT and NEW_WEIGHTS_SHIFT below check
that the changes tested are that visible). One engine per model for the whole module; the
module takes about 1.5 minutes on the 2-core machine (half of it importing vLLM and starting
two engines). Skipped where vLLM is not installed (`make install-vllm`).
"""

import copy
from dataclasses import replace

import pytest
import torch

try:
    import vllm  # noqa: F401
except Exception as e:  # noqa: BLE001 - ImportError, or a broken install (CUDA builds of torchvision)
    pytest.skip(f"vLLM is not importable ({type(e).__name__}: {e}); `make install-vllm` installs it", allow_module_level=True)

from langgame import vllm_backend  # noqa: E402
from langgame.config import LoraSettings, PolicyConfig, Sampling  # noqa: E402
from langgame.models import Policy, load_policy  # noqa: E402
from langgame.objective import policy_forward  # noqa: E402
from langgame.rollout import HFBackend  # noqa: E402
from langgame.vllm_backend import StaleWeightsError, VLLMBackend, merged_state_dict  # noqa: E402

TOL = 1e-3
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three prime numbers.", "Who wrote Hamlet?"]
GREEDY = Sampling(temperature=1e-6, max_new_tokens=24)


@pytest.fixture(scope="module")
def policy():
    return load_policy(PolicyConfig(model="smollm2-135m-instruct", compute_dtype="float32"))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    backend = VLLMBackend(tmp_path_factory.mktemp("vllm"), kv_cache_gib=0.25, max_model_len=1024)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompts(policy):
    tok = policy.tokenizer
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"] for q in QUESTIONS]


def scored(policy: Policy, prompts, generations, temperature: float, top_p: float = 1.0) -> list[torch.Tensor]:
    """log-probs of each generation's tokens under softmax(logits / T) restricted to the top-p nucleus, as HFBackend samples."""
    rows = [p + g.tokens for p, g in zip(prompts, generations)]
    ids = torch.full((len(rows), max(map(len, rows))), policy.tokenizer.pad_token_id)
    attention = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], attention[i, : len(r)] = torch.tensor(r), 1
    with torch.no_grad(), policy.activated():
        if top_p == 1.0:
            logp = policy_forward(policy.model, ids, attention, temperature=temperature).logp  # [B, T]
        else:
            logits = policy.model(input_ids=ids, attention_mask=attention).logits[:, :-1].float() / temperature
            full = torch.log_softmax(logits, -1)
            sorted_logp, order = full.sort(-1, descending=True)
            outside = sorted_logp.exp().cumsum(-1) - sorted_logp.exp() > top_p
            nucleus = torch.full_like(full, float("-inf")).scatter(-1, order, sorted_logp.masked_fill(outside, float("-inf")))
            logp = (nucleus - torch.logsumexp(nucleus, -1, keepdim=True)).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return [logp[i, len(p) - 1 : len(p) - 1 + len(g.tokens)] for i, (p, g) in enumerate(zip(prompts, generations))]


def max_gap(generations, reference) -> float:
    return max(float((torch.tensor(g.logprobs) - r).abs().max()) for g, r in zip(generations, reference))


@pytest.mark.smollm2
def test_greedy_turns_equal_hf_backends(policy, backend, prompts):
    hf = HFBackend().generate(policy, prompts, GREEDY, torch.Generator().manual_seed(0))
    ours = backend.generate(policy, prompts, GREEDY, torch.Generator().manual_seed(0))
    assert [g.tokens for g in ours] == [g.tokens for g in hf]
    assert [g.truncated for g in ours] == [g.truncated for g in hf]
    assert {g.truncated for g in ours} == {True, False}  # both a finished and a cut turn
    for g in ours:
        assert len(g.logprobs) == len(g.tokens) <= GREEDY.max_new_tokens
        assert (g.tokens[-1] == policy.eot_id) != g.truncated and policy.eot_id not in g.tokens[:-1]
    assert backend.version(policy) == policy.version


@pytest.mark.smollm2
@pytest.mark.parametrize("temperature, top_p", [(0.7, 1.0), (1.0, 0.8)])
def test_sampled_logprobs_are_the_sampling_distributions(policy, backend, prompts, temperature, top_p):
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=24)
    ours = backend.generate(policy, prompts, sampling, torch.Generator().manual_seed(1))
    assert max_gap(ours, scored(policy, prompts, ours, temperature, top_p)) < TOL
    again = backend.generate(policy, prompts, sampling, torch.Generator().manual_seed(1))
    other = backend.generate(policy, prompts, sampling, torch.Generator().manual_seed(2))
    assert [g.tokens for g in again] == [g.tokens for g in ours] != [g.tokens for g in other]


@pytest.mark.smollm2
def test_more_prompt_tokens_than_one_engine_step(policy, backend):
    """32 prompts of about 35 tokens: more than one engine step takes (max_model_len tokens, 1024 here).
    vLLM cannot rewind a seeded CPU generator after a partly prefilled prompt, so none may be split."""
    tok = policy.tokenizer
    many = [tok.apply_chat_template([{"role": "user", "content": f"What is {i} plus {2 * i + 1}?"}], add_generation_prompt=True)["input_ids"]
            for i in range(32)]
    assert sum(map(len, many)) > 1024
    sampling = Sampling(temperature=1.0, max_new_tokens=4)
    ours = backend.generate(policy, many, sampling, torch.Generator().manual_seed(5))
    assert [len(g.tokens) for g in ours] == [4] * 32 and max_gap(ours, scored(policy, many, ours, 1.0)) < TOL


NEW_WEIGHTS_SHIFT = 0.1


@pytest.mark.smollm2
def test_new_weights_reach_the_engine_and_back(policy, backend, prompts):
    sampling = Sampling(temperature=1.0, max_new_tokens=16)
    greedy_before = backend.generate(policy, prompts, GREEDY, torch.Generator().manual_seed(0))
    saved = {k: v.clone() for k, v in policy.model.state_dict().items()}
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every tensor moves, so a layer that kept its old weights shows
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * p.std() * 0.1)
    policy.model.langgame_version = policy.version + 1
    try:
        ours = backend.generate(policy, prompts, sampling, torch.Generator().manual_seed(3))
        assert backend.version(policy) == policy.version
        new = scored(policy, prompts, ours, 1.0)
    finally:
        policy.model.load_state_dict(saved)
        policy.model.langgame_version = policy.version + 1
    old = scored(policy, prompts, ours, 1.0)
    assert max_gap(ours, new) < TOL < NEW_WEIGHTS_SHIFT < max_gap(ours, old)
    restored = backend.generate(policy, prompts, GREEDY, torch.Generator().manual_seed(0))
    assert [g.tokens for g in restored] == [g.tokens for g in greedy_before]


@pytest.mark.smollm2
def test_a_layer_without_its_weights_is_a_stale_engine(policy, backend, prompts, monkeypatch):
    real = vllm_backend.merged_state_dict
    monkeypatch.setattr(vllm_backend, "merged_state_dict",  # a sync that drops q_proj of one layer (k and v arrive)
                        lambda p, dtype=None: {k: v for k, v in real(p, dtype).items() if "layers.3.self_attn.q_proj" not in k})
    policy.model.langgame_version = policy.version + 1
    with pytest.raises(StaleWeightsError, match=r"holds weight version None, the policy is at \d+; .*layers\.3\.self_attn\.qkv_proj"):
        backend.generate(policy, prompts, GREEDY, torch.Generator().manual_seed(0))
    assert backend.version(policy) is None
    monkeypatch.undo()
    ours = backend.generate(policy, prompts, Sampling(temperature=1.0, max_new_tokens=8), torch.Generator().manual_seed(0))
    assert backend.version(policy) == policy.version and max_gap(ours, scored(policy, prompts, ours, 1.0)) < TOL


LORA_SHIFT = 0.1


def randomize_adapter(policy: Policy, seed: int) -> None:
    with torch.no_grad():  # B = 0 at init: make the adapter do something
        noise = torch.Generator().manual_seed(seed)
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=noise) * 0.02)
    policy.model.langgame_version = policy.version + 1


@pytest.mark.smollm2
def test_lora_adapter_reaches_the_engine_merged(backend, prompts):
    torch.manual_seed(0)
    lora = load_policy(PolicyConfig(model="smollm2-135m-instruct", compute_dtype="float32", lora=LoraSettings(r=8)))
    sampling = Sampling(temperature=1.0, max_new_tokens=16)
    randomize_adapter(lora, seed=0)
    before = {k: v.clone() for k, v in lora.model.state_dict().items()}
    first = backend.generate(lora, prompts, sampling, torch.Generator().manual_seed(4))  # creates the engine, then syncs
    assert backend.version(lora) == lora.version == 1
    assert max_gap(first, scored(lora, prompts, first, 1.0)) < TOL
    assert max_gap(first, scored(replace(lora, base_only=True), prompts, first, 1.0)) > LORA_SHIFT
    after = lora.model.state_dict()  # the training model is not merged into
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    randomize_adapter(lora, seed=1)  # an update of the adapter only, as a LoRA optimizer step
    second = backend.generate(lora, prompts, sampling, torch.Generator().manual_seed(4))
    assert backend.version(lora) == 2
    assert max_gap(second, scored(lora, prompts, second, 1.0)) < TOL
    assert max_gap(first, scored(lora, prompts, first, 1.0)) > LORA_SHIFT  # the update is visible


def test_merged_weights_are_those_of_the_policys_adapter():
    torch.manual_seed(0)
    two = load_policy(PolicyConfig(model="tiny-random", lora=LoraSettings(r=4)))
    model = two.model
    model.add_adapter("p2", copy.deepcopy(model.peft_config["default"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    for adapter in ("default", "p2"):
        reference = copy.deepcopy(model)
        reference.set_adapter(adapter)
        expected = reference.merge_and_unload().state_dict()
        merged = merged_state_dict(replace(two, adapter=adapter))
        assert merged.keys() == expected.keys() and all(torch.equal(merged[k], expected[k]) for k in expected)
    base, expected = merged_state_dict(replace(two, base_only=True)), load_policy("tiny-random").model.state_dict()
    assert base.keys() == expected.keys() and all(torch.equal(base[k], expected[k]) for k in expected)


@pytest.mark.smollm2
def test_rl_on_the_vllm_backend_trains_with_the_engines_gap_reported(tmp_path, monkeypatch):
    """Two RL steps whose rollouts vLLM samples: every update's weights reach the engine (a stale one
    would raise), the learner's recomputed log-probs agree with the engine's (rollout/logp_gap,
    fp32 on both sides) and truncated importance sampling reweights the advantages."""
    from safetensors.torch import load_file

    from langgame.config import RLConfig
    from langgame.games import GAMES
    from langgame.loop import drive
    from langgame.metrics import read_metrics
    from langgame.rl import RLRun

    monkeypatch.setitem(GAMES, "letters", "test_rl:LettersGame")
    cfg = RLConfig.model_validate({
        "stage": "rl", "seed": 0, "game": {"name": "letters"}, "rollout": {"backend": "vllm"},
        "player2": {"policy": {"model": "smollm2-135m-instruct"}, "sampling": {"max_new_tokens": 8}},
        "algo": {"name": "reinforce", "group_size": 2, "tis_cap": 2.0}, "optim": {"lr": 1e-4, "schedule": "constant"},
        "scenarios_per_step": 4, "micro_batch_size": 8, "max_steps": 2, "eval_scenarios": 4, "run_dir": str(tmp_path / "run"),
    })
    run_dir = drive(RLRun, cfg)
    gaps = [r["rollout/logp_gap_player2"] for r in read_metrics(run_dir) if "rollout/logp_gap_player2" in r]
    assert len(gaps) == 2 and all(0 <= g < TOL for g in gaps)
    initial = load_policy(PolicyConfig(model="smollm2-135m-instruct")).model.state_dict()
    final = load_file(run_dir / "final" / "model.safetensors")
    assert any(not torch.equal(final[k], initial[k]) for k in final)
