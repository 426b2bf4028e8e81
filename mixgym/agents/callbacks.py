"""An SB3 callback that logs the mixture and per-domain losses to SB3's logger (TensorBoard).

SB3 logs its own losses; what a data-mixing run needs besides is *what the agent chose* and
*what each domain did*. `MixtureLogger` reads them from ``info`` after every decision and
records, under SB3's logger (so into TensorBoard when the agent has ``tensorboard_log``):

- ``mixture/<domain>`` (chosen), ``realised_mixture/<domain>`` (trained on: the share of the
  decision's samples), ``train_loss/<domain>``, ``eval_loss/<domain>``,
- ``mix/objective`` (the env's objective of the held-out losses) and ``mix/reward``,
- ``mix/final_objective`` at the end of each run,

dumping every `log_every` decisions at ``num_timesteps``. It works with SB3 models and with
every other agent's ``learn`` (`mixgym.agents.mixer.MixerAgent` calls callbacks as SB3 does).
The CLI switches it on with ``--tensorboard DIR``.

>>> from mixgym.envs import MixingEnv
>>> from mixgym.agents import make_agent
>>> env = MixingEnv(action_map="simplex", total_steps=30)
>>> agent = make_agent("odm", env).learn(3, callback=MixtureLogger())
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback


class MixtureLogger(BaseCallback):
    """Log the mixture chosen and trained on, per-domain losses, objective and reward of every
    decision.

    Args:
        log_every: dump to the logger's outputs every this many decisions.
    """

    def __init__(self, log_every: int = 1, verbose: int = 0) -> None:
        super().__init__(verbose)
        if not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an integer >= 1, got {log_every!r}")
        self.log_every = log_every
        self.domains: list[str] = []

    def _on_training_start(self) -> None:
        self.domains = list(self.training_env.get_attr("domains")[0])

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        for key in ("mixture", "realised_mixture", "train_loss", "eval_loss"):
            for domain, value in zip(self.domains, info[key]):
                self.logger.record(f"{key}/{domain}", float(value))
        self.logger.record("mix/objective", float(info["objective"]))
        self.logger.record("mix/reward", float(self.locals["rewards"][0]))
        if self.locals["dones"][0]:
            self.logger.record("mix/final_objective", float(info["objective"]))
        if self.n_calls % self.log_every == 0:
            self.logger.dump(self.num_timesteps)
        return True
