"""Learning rules, one file each. All feed the one objective's RL weighting (objective.py)."""

from langgame.algos.bc import BehaviourCloning
from langgame.algos.ppo import PPO
from langgame.algos.reinforce import Reinforce

RULES = {"reinforce": Reinforce, "ppo": PPO, "bc": BehaviourCloning}
