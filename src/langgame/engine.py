"""Where the learning seats live: in the driver's process (engine: local) or in Ray actors (engine: ray).

A SeatWorker owns the models of one group of seats (seats.seat_groups: sharing separate, one
worker per learning player; lora and shared, one worker for both; a fixed opponent lives with the
one learner): their policies, references and Learners, and an Actor per policy that samples its
turns. The driver (rl.RLRun) reaches a worker only through `Engine.call`: a method call for
engine local, a Ray actor of the same class for engine ray, so both engines run the same code and
give the same numbers. What crosses:

  act           the observations the driver rendered from its game and a sampling generator's state
                in; the sampled turns and the generator's new state out
  score/update  Experience in; metrics, the scored experience / the policy's new weight version out
  load_weights  a version check (the learner and its actors share the worker's model)
  save          the worker writes its seats into the checkpoint's temporary directory (and final/)

The game stays in the driver, with its state, judges and scripted players: it is never copied
(a game may hold judge models), and workers only need each episode's observation.

The global torch RNG is one stream on both engines: every call takes the driver's RNG state along
and brings the worker's back, so what draws from it (LoRA and value-head init, dropout on the CPU)
draws the same numbers, and the checkpoint the driver writes holds it. Calls are therefore
sequential. The CUDA generators are not carried: where a GPU draws random numbers (dropout on
CUDA), the two engines differ, and such a run resumed on engine ray draws other numbers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from langgame.checkpoint import save_learners
from langgame.config import ConfigError, RLConfig
from langgame.errors import LanggameError
from langgame.game import Episode, Game
from langgame.models import Policy
from langgame.rollout import Actor, StaleWeightsError
from langgame.runtime import configure_cpu
from langgame.seats import Seats, add_learners, load_players, seat_groups, seat_of

Key = tuple[str, int]  # ("current" | "initial", player): a policy a worker samples with
SOCKET_ROOM = 40  # longest Ray temp dir: Ray's unix sockets (<dir>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes


def make_backend(cfg: RLConfig, name: str = ""):
    """The rollout backend of cfg.rollout.backend: hf (in-process transformers; None: rollout's
    default) or vllm (engines under run_dir/vllm/<name>)."""
    if cfg.rollout.backend == "vllm":
        from langgame.vllm_backend import VLLMBackend

        return VLLMBackend(cfg.run_dir / "vllm" / name)
    return None


class SeatModel:
    """A model that lives in a Ray worker, as the driver sees it: its weight version (what
    Policy.version reads) and save_pretrained, which the worker runs (final/ is written from there)."""

    def __init__(self, index: int, version: int):
        self.index, self.langgame_version = index, version
        self.save = None  # set by the driver: (index, directory, kwargs) -> None

    def save_pretrained(self, directory, **kwargs) -> None:
        self.save(self.index, str(directory), kwargs)


class _Observed:
    """The game as a worker sees it: each episode carries the observation the driver rendered."""

    @staticmethod
    def observation(episode: Episode, player: int):
        return episode.meta["view"]

    @staticmethod
    def apply(episode: Episode, turn) -> None:
        episode.turns.append(turn)


class SeatWorker:
    """The models of one group of seats; the same class runs in the driver's process and as a Ray actor.

    Built in two calls, load (the policies) and start (the learners), so that several workers draw
    from the torch RNG in the same order as one would. threads: configure this process's CPU use
    (a Ray worker; None in the driver's process, which drive() configured). backend: makes the
    rollout backend.
    """

    def __init__(self, cfg: RLConfig, players: list[int], threads: int | None, backend):
        if threads is not None:
            configure_cpu(threads)
        self.cfg, self.players, self.backend = cfg, players, backend()
        self.seats: Seats | None = None
        self.actors: dict[Key, Actor] = {}
        self.models: list[torch.nn.Module] = []

    def call(self, method: str, rng: torch.Tensor, *args) -> tuple[Any, torch.Tensor]:
        """Run one method on the driver's torch RNG state; return its result and the state after it."""
        torch.set_rng_state(rng)
        out = getattr(self, method)(*args)
        return out, torch.get_rng_state()

    def load(self, checkpoint: Path | None) -> None:
        self.seats = load_players(self.cfg, checkpoint, self.players)

    def start(self, checkpoint: Path | None, remote: bool) -> tuple[dict, dict, dict]:
        """Make the learners (restored from the checkpoint when resuming) and an Actor per policy.
        Returns policies, initial (seats.Seats; remote: views whose model is a SeatModel) and seat."""
        cfg, seats = self.cfg, self.seats
        state = add_learners(seats, cfg, checkpoint)
        for learner in seats.learners.values():
            learner.step = state.get("iteration", 0) * learner.algo.epochs
        sampling = {1: cfg.player1.sampling, 2: cfg.player2.sampling}
        for kind, policies in (("current", seats.policies), ("initial", seats.initial)):
            self.actors.update({(kind, p): Actor(x, sampling[p], self.backend) for p, x in policies.items() if x is not None})
        if not remote:
            return seats.policies, seats.initial, seats.seat
        refs: dict[int, SeatModel] = {}
        views: dict[int, Policy] = {}

        def view(policy: Policy | None) -> Policy | None:  # one view per policy, one SeatModel per model
            if policy is None:
                return None
            if id(policy.model) not in refs:
                refs[id(policy.model)] = SeatModel(len(self.models), policy.version)
                self.models.append(policy.model)
            return views.setdefault(id(policy), replace(policy, model=refs[id(policy.model)]))

        return {p: view(x) for p, x in seats.policies.items()}, {p: view(x) for p, x in seats.initial.items()}, seats.seat

    def act(self, key: Key, views: list, player: int, generator_state: torch.Tensor, version: int) -> tuple[list, torch.Tensor]:
        """Actor.act for the policy `key` on episodes seen through `views`; asserts the weight version."""
        episodes = [Episode([], meta={"view": v}) for v in views]
        generator = torch.Generator()
        generator.set_state(generator_state)
        self.actors[key].act(_Observed, episodes, player, generator, version)
        return [e.turns[-1] for e in episodes], generator.get_state()

    def score(self, seat: str, exp, rule) -> tuple[dict[str, float], Any]:
        return self.seats.learners[seat].score(exp, rule), exp

    def update(self, seat: str, exp, rule) -> tuple[dict[str, float], int]:
        return self.seats.learners[seat].update(exp, rule)

    def load_weights(self, seat: str, version: int) -> None:
        """The seat's actors sample with the learner's model: check that it is at `version`."""
        held = self.seats.learners[seat].policy.version
        if held != version:
            raise StaleWeightsError(f"seat {seat}: the learner holds weight version {held}, the driver expects {version}")
        for (kind, p), actor in self.actors.items():
            if kind == "current" and self.seats.seat.get(p) == seat:
                actor.load_weights(version)

    def save(self, directory: str) -> None:
        """This worker's seats of a checkpoint (policy, optimizer, heads) into `directory`."""
        save_learners(Path(directory), self.seats.learners)

    def save_pretrained(self, index: int, directory: str, kwargs: dict) -> None:
        self.models[index].save_pretrained(directory, **kwargs)


@dataclass
class Worker:
    """A SeatWorker as the driver holds it: the object itself, or its Ray actor handle."""

    name: str  # its seats, e.g. player2 or player1+player2
    obj: Any


@dataclass
class SeatActor:
    """The driver's handle on a worker's Actor: `rollout.play` calls act on it as on a local Actor."""

    engine: Engine
    worker: Worker
    key: Key
    policy: Policy  # the driver's view: its version is the one the worker must hold

    def act(self, game: Game, episodes: list[Episode], player: int, generator: torch.Generator, version: int | None = None) -> None:
        views = [game.observation(e, player) for e in episodes]
        version = self.policy.version if version is None else version
        turns, state = self.engine.call(self.worker, "act", self.key, views, player, generator.get_state(), version)
        generator.set_state(state)
        for e, turn in zip(episodes, turns):
            game.apply(e, turn)


class Engine:
    """The driver's side of the seats: their workers, and each player's policy as the driver sees it
    (engine local: the policy itself; ray: a view with the tokenizer and the weight version)."""

    def __init__(self, cfg: RLConfig, checkpoint: Path | None, address: str | None = None):
        self.cfg, self.backend, self.ray, self.owns_ray = cfg, make_backend(cfg), None, False
        groups = seat_groups(cfg)
        names = ["+".join(dict.fromkeys(seat_of(p, cfg.sharing) for p in group)) for group in groups]
        if cfg.engine == "local":
            if address is not None:
                raise ConfigError("--address joins a Ray cluster: it needs engine: ray")
            self.workers = [Worker(n, SeatWorker(cfg, g, None, lambda: self.backend)) for g, n in zip(groups, names)]
        else:
            self.ray = _import_ray()
            self.owns_ray = connect(address, cfg.run_dir)
            remote = self.ray.remote(SeatWorker)
            threads = cfg.threads or torch.get_num_threads()  # Ray would leave a worker one thread (OMP_NUM_THREADS=1)
            self.workers = [Worker(n, remote.options(num_gpus=_gpus(self.ray, cfg, g, len(groups))).remote(cfg, g, threads, partial(make_backend, cfg, n)))
                            for g, n in zip(groups, names)]
        for w in self.workers:  # every group's policies, then every group's learners: the RNG order of one process
            self.call(w, "load", checkpoint)
        self.policies: dict[int, Policy | None] = {}
        self.initial: dict[int, Policy | None] = {}
        self.seat: dict[int, str] = {}
        self.where: dict[tuple[int, int], tuple[Worker, Key]] = {}
        self.owner: dict[str, Worker] = {}
        for w in self.workers:
            policies, initial, seat = self.call(w, "start", checkpoint, self.ray is not None)
            self.policies.update(policies)
            self.initial.update(initial)
            self.seat.update(seat)
            self.owner.update({name: w for name in seat.values()})
            for kind, held in (("current", policies), ("initial", initial)):
                for p, policy in held.items():
                    if policy is not None:
                        self.where[(id(policy), p)] = (w, (kind, p))
                        if isinstance(policy.model, SeatModel):
                            policy.model.save = partial(self.call, w, "save_pretrained")

    def call(self, worker: Worker, method: str, *args):
        """worker.method(*args), on the driver's torch RNG stream; a dead Ray actor ends the run in one line."""
        rng = torch.get_rng_state()
        if self.ray is None:
            out, rng = worker.obj.call(method, rng, *args)
        else:
            out, rng = self._get(worker, worker.obj.call.remote(method, rng, *args))
        torch.set_rng_state(rng)
        return out

    def _get(self, worker: Worker, ref):
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayActorError as e:
            self.close()
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LanggameError(f"seat {worker.name}'s Ray actor died: {reason}; continue with --resume") from None
        except exceptions.RayTaskError as e:
            self.close()  # the run ends here; free the other workers
            if isinstance(e.cause, LanggameError):
                raise e.cause from None
            raise

    def actor(self, policy: Policy | None, player: int) -> Actor | SeatActor:
        """What plays `player` with `policy` in a rollout: the scripted policy (None), a worker's
        Actor, or an Actor in the driver for a policy no worker holds (a population opponent)."""
        sampling = (self.cfg.player1 if player == 1 else self.cfg.player2).sampling
        if policy is None or (id(policy), player) not in self.where:
            return Actor(policy, sampling, self.backend)
        return SeatActor(self, *self.where[(id(policy), player)], policy)

    def score(self, seat: str, exp, rule) -> tuple[dict[str, float], Any]:
        """Learner.score in the seat's worker. Returns the metrics and the scored experience."""
        return self.call(self.owner[seat], "score", seat, exp, rule)

    def update(self, seat: str, exp, rule) -> tuple[dict[str, float], int]:
        return self.call(self.owner[seat], "update", seat, exp, rule)

    def load_weights(self, seat: str, version: int) -> None:
        """After an update: the seat's actors must hold the learner's weights at `version`."""
        self.call(self.owner[seat], "load_weights", seat, version)
        for p, name in self.seat.items():
            if name == seat:
                self.policies[p].model.langgame_version = version  # the driver's view (engine local: the model itself)

    def save(self, directory: Path) -> None:
        """Every worker writes its seats into a checkpoint's temporary directory."""
        for w in self.workers:
            self.call(w, "save", str(directory))

    @property
    def learners(self) -> dict:
        """The Learners (engine local only: on engine ray they live in the workers)."""
        if self.ray is not None:
            raise LanggameError("engine: ray keeps the learners in Ray actors; the driver holds none")
        return {name: learner for w in self.workers for name, learner in w.obj.seats.learners.items()}

    def close(self) -> None:
        if self.ray is None:
            return
        for w in self.workers:
            self.ray.kill(w.obj)
        self.workers = []
        if self.owns_ray:
            self.ray.shutdown()
            self.owns_ray = False


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("engine: ray needs the ray package: pip install 'langgame[ray]'") from None
    return ray


def _gpus(ray, cfg: RLConfig, group: list[int], n_workers: int) -> float:
    """GPUs a worker asks Ray for: a share of the cluster's when its policies may use one (device auto or cuda)."""
    devices = [(cfg.player1 if p == 1 else cfg.player2).policy.device for p in group]
    total = ray.cluster_resources().get("GPU", 0)
    return 0 if not total or all(d == "cpu" for d in devices) else min(1.0, total / n_workers)


def ray_temp_dir(run_dir: Path) -> Path:
    """Ray's session files: <run_dir>/ray, or a short directory under /tmp when that path is too long for Ray's unix sockets."""
    path = Path(run_dir).resolve() / "ray"
    if len(str(path)) <= SOCKET_ROOM:
        return path
    short = Path("/tmp") / f"langgame-ray-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    print(f"Ray session files: {short} (the run directory's path is too long for Ray's unix sockets)", file=sys.stderr)
    return short


def connect(address: str | None, run_dir: Path) -> bool:
    """Start Ray on this machine (its session files under the run directory), or join the cluster at
    `address` (ray://host:port, host:port or auto). Nothing if Ray is already initialised in this
    process (a test, a notebook). True when this call started or joined it (close() shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}  # workers' warnings and errors reach this console
    state = random.getstate()  # ray.init draws from Python's global RNG, which the checkpoint records
    if address is not None:
        ray.init(address=address, **quiet)
    else:
        # two logical CPUs: at most two workers (one per learning player); each sets its torch threads itself
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(ray_temp_dir(run_dir)), **quiet)
    random.setstate(state)
    return True

