"""propose_solve: a cooperative prompter and responder that both learn (paper 4.8; AZR and R-Zero's rewards).

Player 1, the proposer, writes an integer arithmetic task: one expression over integers with +, - and *
and parentheses, asked for with about `ops` operations (drawn by chance), after one example exchange of
the reply format. The game takes the first valid expression in the reply, computes its value (an AST walk
over those nodes only; nothing the proposer claims is trusted) and shows the solver that expression alone.
Player 2, the solver, then makes `attempts` independent attempts, each seeing only the task after one
example exchange of the reply format; the last integer of a reply is its answer. Attempt j earns the solver
correct_j / attempts on its own turn, so R2 is the solver's accuracy `acc` on the task. The proposer's reward,
on the last turn:

  identical     acc: R1 = R2, the paper's identical-interest game
  learnability  1 - acc if acc > 0 else 0 (AZR: tasks the solver sometimes, not always, solves)
  edge          min(acc, 1 - acc) - repetition_coef * (share of the batch's other tasks equal to it) (R-Zero)

A reply that holds no such expression within the limits (1 to max_ops operations: a bare number is no
task; numbers below
10**max_digits, |value| below 10**9) is invalid: it ends the episode, pays the proposer
`invalid_reward` (both players under identical interest) and is counted (metric invalid).

The solver learns from one experience row per attempt (Game.views), so REINFORCE's group baseline
(`algo.baseline: group`, group_size 1) is the mean of the other attempts at the same task. In the eval
split chance draws the task itself: random expressions with 1..max_ops operations from the seeded eval
stream, the same at every evaluation, so the solver's accuracy is measured per operation count
(acc_ops<k>). With no proposer policy (player1.policy: null), the training tasks are such random
expressions too: the uniform-task baseline.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from typing import Literal

from pydantic import Field

from langgame.config import Strict
from langgame.game import Episode, Game, Message, Payoff, Turn
from langgame.rollout import with_turn_rewards

PROPOSER = (
    "You write arithmetic exercises for a student. Write one expression with integers, +, -, * and "
    "parentheses, using the number of operations asked for, that the student can just barely compute. "
    "Reply with the expression only."
)
ASK = "Operations: {ops}"
SOLVER = "Compute the value of the expression. Reply with the number only."
# each role's reply format, shown before each of its turns
PROPOSER_EXAMPLE = (("user", ASK.format(ops=2)), ("assistant", "(7 - 3) * 2"))
FORMAT_EXAMPLE = (("user", "2 * (3 + 1)"), ("assistant", "8"))
EXPRESSION = re.compile(r"[\d+\-*() ]*\d[\d+\-*() ]*")
OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


class Options(Strict):
    proposer_reward: Literal["identical", "learnability", "edge"] = "identical"
    attempts: int = Field(4, ge=1, description="the solver's independent attempts at each task")
    max_ops: int = Field(4, ge=1, description="most operations in a valid task; the requested count is 1..max_ops")
    max_digits: int = Field(2, ge=1, description="numbers in a task are below 10**max_digits")
    invalid_reward: float = Field(-1.0, le=0, description="the proposer's reward for a reply with no valid task")
    repetition_coef: float = Field(1.0, ge=0, description="edge: weight of the share of equal tasks in the batch")


def evaluate(text: str, max_ops: int, max_digits: int, min_ops: int = 1) -> tuple[str, int, int] | None:
    """(expression, value, operation count) of the first expression in `text` within the limits
    (min_ops..max_ops operations), or None if there is none. Only integer literals, +, -, * and unary
    minus are evaluated."""
    parsed = (parse(" ".join(m.group(0).split()), max_ops, max_digits) for m in EXPRESSION.finditer(text))
    return next((p for p in parsed if p is not None and p[2] >= min_ops), None)


def parse(expression: str, max_ops: int, max_digits: int) -> tuple[str, int, int] | None:
    """(expression, value, operation count) of one expression, or None if it is not one within the limits."""
    try:
        tree = ast.parse(expression, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    ops = 0

    def walk(node: ast.AST) -> int:
        nonlocal ops
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value < 10**max_digits:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            ops += 1
            if ops > max_ops:
                raise ValueError("too many operations")
            value = OPERATORS[type(node.op)](walk(node.left), walk(node.right))
            if abs(value) >= 10**9:
                raise ValueError("too large")
            return value
        raise ValueError(f"not allowed: {type(node).__name__}")

    try:
        value = walk(tree)
    except (ValueError, RecursionError):
        return None
    return expression, value, ops


def random_task(rng: random.Random, ops: int, max_digits: int) -> str:
    """A random expression with exactly `ops` operations (numbers 1 .. 10**max_digits - 1)."""
    if ops == 0:
        return str(rng.randrange(1, 10**max_digits))
    left = rng.randrange(ops)
    a, b = random_task(rng, left, max_digits), random_task(rng, ops - 1 - left, max_digits)
    op = rng.choice("+-*")
    wrap = lambda s: f"({s})" if not s.isdigit() else s  # noqa: E731
    return f"{wrap(a)} {op} {wrap(b)}"


def answer_of(reply: str) -> int | None:
    numbers = re.findall(r"-?\d+", reply.replace(",", ""))
    return int(numbers[-1]) if numbers else None


class ProposeSolveGame(Game):
    name = "propose_solve"
    Options = Options

    def __init__(self, options: Options):
        self.options = options
        self.payoff = Payoff.IDENTICAL_INTEREST if options.proposer_reward == "identical" else Payoff.GENERAL_SUM

    def initial(self, rng: random.Random, split: str) -> Episode:
        ops = rng.randint(1, self.options.max_ops)
        episode = Episode([], self.payoff, game=self.name, meta={"requested_ops": ops, "seed": rng.getrandbits(32)})
        if split == "eval":  # chance writes the task: player 1's turn, part of the environment (no tokens)
            self.apply(episode, Turn(1, random_task(rng, ops, self.options.max_digits)))
        return episode

    def current_player(self, episode: Episode) -> int | None:
        if not episode.turns:
            return 1
        if "value" not in episode.meta or len(episode.turns) > self.options.attempts:
            return None
        return 2

    def observation(self, episode: Episode, player: int) -> list[Message]:
        if player == 1:
            chat = [Message(role, Turn(0, text), -1) for role, text in (("system", PROPOSER), *PROPOSER_EXAMPLE)]
            chat.append(Message("user", Turn(0, ASK.format(ops=episode.meta["requested_ops"])), -1))
            return chat + [Message("assistant", t, k) for k, t in enumerate(episode.turns[:1])]
        example = [Message(role, Turn(0, text), -1) for role, text in FORMAT_EXAMPLE]
        return [Message("system", Turn(0, SOLVER), -1), *example, Message("user", Turn(0, episode.meta["task"]), -1)]

    def views(self, episode: Episode, player: int) -> list[list[Message]]:
        """The proposer's one chat; one row per solver attempt, each seeing only the task."""
        if player == 1:
            return [self.observation(episode, 1)]
        return [self.observation(episode, 2) + [Message("assistant", t, k)] for k, t in enumerate(episode.turns) if t.player == 2]

    def apply(self, episode: Episode, turn: Turn) -> None:
        episode.turns.append(turn)
        if len(episode.turns) == 1:
            parsed = evaluate(turn.text, self.options.max_ops, self.options.max_digits)  # a bare number is no task
            if parsed is not None:
                episode.meta.update(task=parsed[0], value=parsed[1], ops=parsed[2])

    def scripted_turn(self, episode: Episode, player: int) -> str:
        """The uniform-task proposer: a random expression with the requested number of operations."""
        return random_task(random.Random(episode.meta["seed"]), episode.meta["requested_ops"], self.options.max_digits)

    def judge(self, episodes: list[Episode]) -> None:
        counts = Counter(e.meta["task"] for e in episodes if "task" in e.meta)
        o = self.options
        for e in episodes:
            if "value" not in e.meta:
                both = o.invalid_reward if o.proposer_reward == "identical" else 0.0
                with_turn_rewards(e, 0, (o.invalid_reward, both))
                continue
            correct = [answer_of(t.text) == e.meta["value"] for t in e.turns[1:]]
            acc = sum(correct) / len(correct)
            e.meta["accuracy"] = acc
            r1 = {"identical": acc, "learnability": 1 - acc if acc > 0 else 0.0,
                  "edge": min(acc, 1 - acc) - o.repetition_coef * (counts[e.meta["task"]] - 1) / max(len(episodes) - 1, 1)}
            for k, c in enumerate(correct, start=1):
                with_turn_rewards(e, k, (r1[o.proposer_reward] if k == len(correct) else 0.0, c / len(correct)))

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        valid = [e for e in episodes if "value" in e.meta]
        out = {"invalid": 1 - len(valid) / len(episodes)}
        if valid:
            tasks = Counter(e.meta["task"] for e in valid)
            out.update(accuracy=sum(e.meta["accuracy"] for e in valid) / len(valid),
                       ops=sum(e.meta["ops"] for e in valid) / len(valid),
                       trivial=sum(e.meta["ops"] <= 1 for e in valid) / len(valid),
                       repeated=1 - len(tasks) / len(valid))
            for ops in sorted({e.meta["ops"] for e in valid}):
                group = [e.meta["accuracy"] for e in valid if e.meta["ops"] == ops]
                out[f"acc_ops{ops}"] = sum(group) / len(group)
        return out
