"""Agents that choose the mixture: AC-ODM, HDS, SB3 presets, ODM's bandits, static mixtures, DoReMi.

``make_agent(name, env, **overrides)`` makes any of them (`AGENTS` lists the names);
``load_agent(path, env=None)`` loads any saved one; `evaluate` and `learn_online` run them and
return `Results`. One module per published method, its docstring citing paper and code:
`acodm` (AC-ODM's DDPG and its released frozen actor), `hds` (HDS's SAC), `odm` (ODM's
bandits), `doremi` (DoReMi online and its static protocol); `sb3_presets` holds the SB3
machinery they share (and td3, ppo), `static` the fixed mixtures. See DESIGN.md, "Agents".

>>> from mixgym.envs import MixingEnv
>>> from mixgym.agents import make_agent, evaluate
>>> env = MixingEnv(action_map="simplex", total_steps=40)
>>> results = evaluate(make_agent("odm", env), env, episodes=1, seed=0)
>>> len(results.final_objectives())
1
"""

from mixgym.agents import acodm, doremi, hds, odm, sb3_presets, static, tuned  # noqa: F401  (each registers its agents)
from mixgym.agents.base import AGENTS, Agent, EnvFacts, InfoObserver, load_agent, make_agent, make_config
from mixgym.agents.callbacks import MixtureLogger
from mixgym.agents.mixer import MixerAgent
from mixgym.agents.runner import Results, evaluate, learn_online
from mixgym.agents.sb3_presets import SB3Agent

PAPER_REWARDS: dict[str, str] = {
    name: spec.env_options["reward"] for name, spec in AGENTS.items() if "reward" in spec.env_options
}
"""The env reward each agent with a set-up learns with (AC-ODM: gradient alignment; HDS: holistic;
the tuned presets: the advantage reward they were tuned with)."""

__all__ = [
    "AGENTS",
    "PAPER_REWARDS",
    "Agent",
    "EnvFacts",
    "InfoObserver",
    "MixerAgent",
    "MixtureLogger",
    "Results",
    "SB3Agent",
    "evaluate",
    "learn_online",
    "load_agent",
    "make_agent",
    "make_config",
]
