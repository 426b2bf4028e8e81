"""mixgym: online data mixing for language-model pretraining as a Gymnasium environment.

>>> import gymnasium, mixgym
>>> env = gymnasium.make("mixgym/MixingHolistic-v1", backend="toy", total_steps=20)
>>> env.unwrapped.domains
['easy', 'hard', 'noise', 'redundant', 'conflict']
"""

from mixgym.envs import MixingEnv
from mixgym.registration import register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["MixingEnv", "__version__", "register_envs"]
