"""What computing a batch's shared prefix once buys (objective.policy_forward): the same work with it and without it.

Two workloads on the shipped SmolLM2-135M-Instruct (fp32 weights, bf16 autocast as in the examples):
  solver  forward + backward of 16 propose-solve solver turns (system prompt and format example shared,
          a different task each, a short answer): one micro-batch of an update
  leduc   the exact policy of the first --states Leduc information states in full text (the rules once,
          then each state's prompt once for its choices), no gradients: what an exploitability evaluation does for every state
Each is timed --repeats times alternately with sharing (objective.SHARED_MIN as shipped) and without (the
full pass); the table reports the fastest of each. Prints one JSON object, then a Markdown table.

    .venv/bin/python benchmarks/shared_prefix.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from open_spiel.python import policy as policy_lib

import langgame.objective as objective
from langgame.config import PolicyConfig
from langgame.game import Episode, Turn
from langgame.games.propose_solve import FORMAT_EXAMPLE, SOLVER
from langgame.games.spiel import action_logprobs, load_game
from langgame.models import load_policy


def solver_batch(policy, n: int = 16):
    rng = random.Random(0)
    episodes = [Episode([Turn(0, SOLVER), Turn(0, FORMAT_EXAMPLE[0][1]), Turn(0, FORMAT_EXAMPLE[1][1]),
                         Turn(1, f"{rng.randint(1, 9)} * ({rng.randint(1, 9)} + {rng.randint(1, 9)}) - {rng.randint(1, 9)}"),
                         Turn(2, str(rng.randint(1, 99)))]) for _ in range(n)]
    return objective.collate([policy.render(e) for e in episodes], policy.tokenizer.pad_token_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--states", type=int, default=120, help="Leduc information states")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(PolicyConfig(model="smollm2-135m-instruct", compute_dtype="bfloat16"))
    batch = solver_batch(policy)
    where = batch.owner == 2
    game = load_game("leduc_poker")
    states = policy_lib.TabularPolicy(game.game).states[: args.states]

    def solver() -> None:
        with policy.autocast():
            out = objective.policy_forward(policy.model, batch.ids, batch.attention, where)
        out.logp.sum().backward()
        policy.model.zero_grad()

    def leduc() -> None:
        with torch.no_grad():
            action_logprobs(game, policy, states)

    shipped, results = objective.SHARED_MIN, {}
    for name, work in (("solver", solver), ("leduc", leduc)):
        times = {"shared": [], "full": []}
        for _ in range(args.repeats):
            for mode, minimum in (("shared", shipped), ("full", 10**9)):
                objective.SHARED_MIN = minimum
                start = time.perf_counter()
                work()
                times[mode].append(time.perf_counter() - start)
        objective.SHARED_MIN = shipped
        results[name] = {mode: min(t) for mode, t in times.items()} | {"times": times}
    results["solver"]["tokens"] = list(batch.ids.shape)
    results["solver"]["shared_tokens"] = objective.shared_prefix(batch.ids, batch.attention, where)
    results["leduc"]["states"] = len(states)
    results["threads"] = args.threads
    print(json.dumps(results))
    print("| workload | full pass (s) | shared prefix once (s) | speed-up |\n|---|---|---|---|")
    for name in ("solver", "leduc"):
        r = results[name]
        print(f"| {name} | {r['full']:.2f} | {r['shared']:.2f} | {r['full'] / r['shared']:.2f}x |")


if __name__ == "__main__":
    main()
