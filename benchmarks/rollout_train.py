"""Rollout and RL-step throughput: langgame's backends and engines vs plain `model.generate` and TRL's GRPOTrainer.

One run, one machine, one model (the shipped SmolLM2-135M-Instruct, fp32 weights, 2 threads),
one workload: prompts of about 50 tokens, sampled at temperature 1 with up to 64 new tokens, in
batches of 8, 32 (the same 32 prompts) and 128 (128 distinct prompts); an RL step is a rollout of
32 episodes (8 prompts x 4 samples) plus one update on them. langgame runs with bf16 compute (its
examples' setting: rollouts sample from a bf16 copy of the weights, updates run under bf16
autocast; weights and optimizer stay fp32), with the hf and the vllm rollout backend, the RL step
on engine local and engine ray, and with fp32 compute. Each part runs in its own subprocess, so
peak RSS is per part. Prints one JSON object, then a Markdown table.

    .venv/bin/python benchmarks/rollout_train.py                          # all parts, about 15 minutes
    .venv/bin/python benchmarks/rollout_train.py --skip-trl --skip-vllm   # without TRL (pip install trl) or vLLM (make install-vllm)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

THREADS = 2
NEW_TOKENS = 64
ANIMALS = ["cat", "dog", "robot", "fish", "king", "bird", "tree", "car"]
SKILLS = ["sing", "fly", "code", "cook"]


LENGTHS = ["fifty", "forty", "thirty", "twenty"]


def prompts(n: int = 32) -> list[str]:
    """n <= 128 distinct user prompts, about 50 tokens each with SmolLM2's chat template (the first 32 are the RL step's)."""
    return [
        f"Write a short story about a {a} who learns to {s}. Keep it under {w} words and make it funny please."
        for w in LENGTHS for a in ANIMALS for s in SKILLS
    ][:n]


def reward(prompts, completions, **columns) -> list[float]:
    """A cheap TRL-shaped reward used by both frameworks: prefer replies of about 30 words."""
    text = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [-abs(len(t.split()) - 30) / 30 for t in text]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def part_matmul() -> dict:
    import torch

    torch.set_num_threads(THREADS)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(2048, 2048, dtype=dtype)
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(5))
        out[f"matmul_peak_{name}_gflops"] = 2 * 2048**3 / best / 1e9
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _policy(compute: str = "bfloat16"):
    from langgame.config import PolicyConfig
    from langgame.models import load_policy
    from langgame.runtime import configure_cpu

    configure_cpu(THREADS)
    return load_policy(PolicyConfig(model="smollm2-135m-instruct", compute_dtype=compute))


def _chat_ids(policy, texts):
    return [policy.tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True)["input_ids"] for t in texts]


def part_generate(batch: int) -> dict:
    """Plain transformers sampling: model.generate on left-padded batches, fp32."""
    import torch

    policy = _policy("float32")
    tok = policy.tokenizer
    tok.padding_side = "left"
    ids = _chat_ids(policy, prompts(max(32, batch)))
    total, elapsed = 0, 0.0
    torch.manual_seed(0)
    for i in range(0, len(ids), batch):
        chunk = tok.pad({"input_ids": ids[i : i + batch]}, return_tensors="pt")
        start = time.perf_counter()
        with torch.no_grad():
            out = policy.model.generate(**chunk, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=NEW_TOKENS,
                                        pad_token_id=tok.pad_token_id, eos_token_id=policy.eot_id)
        elapsed += time.perf_counter() - start
        new = out[:, chunk["input_ids"].shape[1] :]
        for row in new.tolist():  # count up to and including the end-of-turn token
            total += row.index(policy.eot_id) + 1 if policy.eot_id in row else len(row)
    return {"new_tokens": total, "seconds": elapsed, "tokens_per_s": total / elapsed, "peak_rss_gib": peak_rss_gib()}


def part_langgame_generate(batch: int, compute: str, backend: str = "hf") -> dict:
    """langgame's rollout backend (hf: HFBackend; vllm: VLLMBackend, after one untimed warm-up call
    that starts the engine: its start-up is reported apart)."""
    import torch

    from langgame.config import Sampling
    from langgame.rollout import HFBackend

    policy = _policy(compute)
    ids = _chat_ids(policy, prompts(max(32, batch)))
    generator = torch.Generator().manual_seed(0)
    startup = 0.0
    if backend == "vllm":
        from langgame.vllm_backend import VLLMBackend

        engine = VLLMBackend(tempfile.mkdtemp())
        start = time.perf_counter()
        engine.generate(policy, ids[:batch], Sampling(max_new_tokens=NEW_TOKENS), torch.Generator().manual_seed(1))
        startup = time.perf_counter() - start
    else:
        engine = HFBackend()
    total, elapsed = 0, 0.0
    for i in range(0, len(ids), batch):
        start = time.perf_counter()
        out = engine.generate(policy, ids[i : i + batch], Sampling(max_new_tokens=NEW_TOKENS), generator)
        elapsed += time.perf_counter() - start
        total += sum(len(g.tokens) for g in out)
    return {"new_tokens": total, "seconds": elapsed, "tokens_per_s": total / elapsed, "peak_rss_gib": peak_rss_gib(), "startup_s": startup}


def part_langgame_rl(compute: str, engine: str = "local") -> dict:
    """Two RL steps of the real driver (rollout + judge + scoring + REINFORCE update); the second is timed.

    engine: ray runs the learning seat in a Ray actor on this machine (its start-up is not timed);
    its peak RSS is the driver's alone.
    """
    from langgame.config import RLConfig
    from langgame.games import GAMES
    from langgame.rl import RLRun

    GAMES["bench_prompts"] = "bench_game:PromptGame"
    sys.path.insert(0, os.path.dirname(__file__))
    cfg = RLConfig.model_validate({
        "stage": "rl", "seed": 0, "threads": THREADS, "engine": engine,
        "game": {"name": "bench_prompts"},
        "player2": {"policy": {"model": "smollm2-135m-instruct", "compute_dtype": compute},
                    "sampling": {"temperature": 1.0, "max_new_tokens": NEW_TOKENS}},
        "algo": {"name": "reinforce", "group_size": 4},
        "optim": {"lr": 1e-6},
        "scenarios_per_step": 8, "micro_batch_size": 8, "max_steps": 2,
        "run_dir": tempfile.mkdtemp(prefix="lg"),
    })
    _policy(compute)  # configure threads and the allocator as the CLI does
    run = RLRun(cfg, None)
    run.step()
    values = run.step()
    run.close()
    tokens = values["train/tokens"]  # every token of the 32 episodes (prompt + completion)
    params = 134_515_008  # SmolLM2-135M
    update_s = tokens / values["train/tokens_per_s"]
    return {
        "step_seconds": values["time/step_s"],
        "episode_tokens": tokens,
        "tokens_per_s": tokens / values["time/step_s"],
        "rollout_tokens_per_s": values["rollout/tokens_per_s"],
        "update_seconds": update_s,
        "update_flops_per_s": 6 * params * tokens / update_s,
        "peak_rss_gib": peak_rss_gib(),
    }


def part_trl() -> dict:
    """Two GRPOTrainer steps (8 prompts x 4 generations = 32 completions, <= 64 tokens); the second is timed."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    policy = _policy("float32")
    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts()[:8]] * 2)
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, num_generations=4, max_completion_length=NEW_TOKENS,
        max_steps=2, use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1, temperature=1.0,
        learning_rate=1e-6, dataloader_num_workers=0,
    )
    counted = []
    trainer = GRPOTrainer(model=policy.model, reward_funcs=reward, args=args, train_dataset=data, processing_class=policy.tokenizer,
                          callbacks=[Clock()])
    original = trainer._generate_and_score_completions

    def counting(inputs):
        out = original(inputs)
        counted.append(int(out["prompt_mask"].sum() + out["completion_mask"].sum()))
        return out

    trainer._generate_and_score_completions = counting
    torch.manual_seed(0)
    trainer.train()
    step_s = times[3] - times[2]
    return {"step_seconds": step_s, "episode_tokens": counted[-1], "tokens_per_s": counted[-1] / step_s, "peak_rss_gib": peak_rss_gib()}


PARTS = {
    "matmul": part_matmul,
    "generate_b8": lambda: part_generate(8),
    "generate_b32": lambda: part_generate(32),
    "generate_b128": lambda: part_generate(128),
    "langgame_b8": lambda: part_langgame_generate(8, "bfloat16"),
    "langgame_b32": lambda: part_langgame_generate(32, "bfloat16"),
    "langgame_b128": lambda: part_langgame_generate(128, "bfloat16"),
    "vllm_b32": lambda: part_langgame_generate(32, "bfloat16", "vllm"),
    "vllm_b128": lambda: part_langgame_generate(128, "bfloat16", "vllm"),
    "langgame_b32_fp32": lambda: part_langgame_generate(32, "float32"),
    "langgame_rl": lambda: part_langgame_rl("bfloat16"),
    "langgame_rl_fp32": lambda: part_langgame_rl("float32"),
    "langgame_rl_ray": lambda: part_langgame_rl("bfloat16", "ray"),
    "trl_grpo": part_trl,
}


def table(r: dict) -> str:
    peak_bf16, peak_fp32 = r["matmul"]["matmul_peak_bf16_gflops"], r["matmul"]["matmul_peak_fp32_gflops"]
    rows = [
        "| measurement | tokens/s | vs baseline | peak RSS (GiB) |",
        "|---|---|---|---|",
    ]
    for b in (8, 32, 128):
        base = r[f"generate_b{b}"]["tokens_per_s"]
        rows.append(f"| rollout, `model.generate` fp32, batch {b} | {base:.0f} | 1.00x | {r[f'generate_b{b}']['peak_rss_gib']:.2f} |")
        for key, label in ((f"langgame_b{b}", "hf backend"), (f"vllm_b{b}", "vllm backend")):
            if key in r:
                lg = r[key]
                rows.append(f"| rollout, langgame {label} bf16 compute, batch {b} | {lg['tokens_per_s']:.0f} | {lg['tokens_per_s'] / base:.2f}x "
                            f"| {lg['peak_rss_gib']:.2f} |")
    if "langgame_b32_fp32" in r:
        lg = r["langgame_b32_fp32"]
        rows.append(f"| rollout, langgame fp32, batch 32 | {lg['tokens_per_s']:.0f} | {lg['tokens_per_s'] / r['generate_b32']['tokens_per_s']:.2f}x | {lg['peak_rss_gib']:.2f} |")
    base = r.get("trl_grpo", {}).get("tokens_per_s")
    if base:
        rows.append(f"| RL step, TRL GRPOTrainer fp32 ({r['trl_grpo']['step_seconds']:.1f} s) | {base:.0f} | 1.00x | {r['trl_grpo']['peak_rss_gib']:.2f} |")
    for key, label in (("langgame_rl", "bf16 compute"), ("langgame_rl_ray", "bf16 compute, engine: ray"), ("langgame_rl_fp32", "fp32")):
        if key in r:
            x = r[key]
            vs = f"{x['tokens_per_s'] / base:.2f}x" if base else "-"
            rows.append(f"| RL step, langgame {label} ({x['step_seconds']:.1f} s) | {x['tokens_per_s']:.0f} | {vs} | {x['peak_rss_gib']:.2f} |")
    lines = "\n".join(rows)
    x = r["langgame_rl"]
    lines += (
        f"\n\nUpdate throughput (bf16 compute): {x['update_flops_per_s'] / 1e9:.0f} GFLOP/s (6 N tokens), "
        f"{x['update_flops_per_s'] / 1e9 / peak_bf16:.0%} of the bf16 matmul peak ({peak_bf16:.0f} GFLOP/s) "
        f"and {x['update_flops_per_s'] / 1e9 / peak_fp32:.0%} of the fp32 peak ({peak_fp32:.0f} GFLOP/s) measured in this run."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--skip-trl", action="store_true", help="skip TRL (install it with `pip install trl` to compare)")
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vllm backend (install it with `make install-vllm`)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part]()))
        return
    results = {}
    for name in PARTS:
        if (name == "trl_grpo" and args.skip_trl) or (name.startswith("vllm") and args.skip_vllm):
            continue
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, __file__, "--part", name], capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"part {name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
