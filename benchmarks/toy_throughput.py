"""Toy-backend throughput: env steps per second for every reward, against the floor set by
the toy's own training, and the env's share of an SB3 SAC run.

Goal (issue 9): at least 5,000 env steps/s at K=5 and 2,000 at K=22 for every reward,
``steps_per_action=10``, reward included, random actions, resets included, one process.

The floor: a decision trains 10 SGD steps, which no environment can skip. The script times
``ToyBackend.train`` alone (drawing the batches and the 10 SGD steps, on the same mixtures
the env was given) and reports ``env step time / train time``: 1.0 would mean evaluation,
gradients, features, reward and info cost nothing. Env and floor are timed in alternating
slices of the same run, so load from other processes hits both alike; rates are given per
wall-clock second and per CPU second of this process (what a quiet machine would see: on a
shared machine the wall-clock rate is the CPU rate times this process' share of a core).

BLAS runs on one thread (set here, before numpy loads): the toy's matrices are small, and on
a busy 2-core machine OpenBLAS' second thread made K=22 steps ten times slower.

    python benchmarks/toy_throughput.py [--seconds 4] [--rounds 8] [--sac-steps 2000]

Prints a Markdown table; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from mixgym.envs import MixingEnv  # noqa: E402
from mixgym.llm_backend import ToyBackend  # noqa: E402

GOALS = {5: 5000, 22: 2000}
REWARDS = ("alignment", "holistic", "eval_loss")


def measure(num_domains: int, reward: str, seconds: float, rounds: int) -> dict[str, float]:
    """Env steps per wall and per CPU second, and the floor (`ToyBackend.train` per decision,
    wall and CPU seconds), timed in `rounds` alternating slices of ``seconds / rounds / 2``."""
    env = MixingEnv(num_domains=num_domains, reward=reward, steps_per_action=10)
    env.reset(seed=0)
    floor = ToyBackend(num_domains=num_domains)
    floor.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, num_domains)).astype(np.float32)
    mixtures = [env.action_mapper(a) for a in actions]
    slice_seconds = seconds / rounds / 2
    wall = {"env": 0.0, "floor": 0.0}
    cpu = {"env": 0.0, "floor": 0.0}
    count = {"env": 0, "floor": 0}

    def env_step() -> None:
        _, _, terminated, _, _ = env.step(actions[count["env"] % len(actions)])
        if terminated:
            env.reset()

    def floor_step() -> None:
        if floor.step >= floor.total_steps:
            floor.reset(seed=count["floor"])
        floor.train(mixtures[count["floor"] % len(mixtures)], 10)

    for _ in range(rounds):
        for name, call in (("env", env_step), ("floor", floor_step)):
            start, start_cpu = time.perf_counter(), time.process_time()
            while time.perf_counter() - start < slice_seconds:
                call()
                count[name] += 1
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    return {
        "rate": count["env"] / wall["env"],
        "cpu_rate": count["env"] / cpu["env"],
        "floor": wall["floor"] / count["floor"],
        "cpu_floor": cpu["floor"] / count["floor"],
    }


class _TimedStep(gym.Wrapper):
    """Sums the wall time spent inside the wrapped env's step and reset."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.step(action)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - start
        return out


def sac_env_share(timesteps: int) -> tuple[float, float]:
    """(env share of wall time, total seconds) for SB3 SAC learning `timesteps` steps at K=5."""
    from stable_baselines3 import SAC

    env = _TimedStep(MixingEnv(reward="alignment"))
    model = SAC("MlpPolicy", env, learning_starts=100, seed=0, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    total = time.perf_counter() - start
    return env.seconds / total, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per cell, env and floor together")
    parser.add_argument("--rounds", type=int, default=8, help="alternating env/floor slices per cell")
    parser.add_argument("--sac-steps", type=int, default=2000, help="SAC timesteps for the share measurement (0: skip)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| K | reward | env steps/s (wall) | per CPU s | goal | CPU rate vs goal | env step, CPU us | train alone, CPU us | env / train |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, goal in GOALS.items():
        for reward in REWARDS:
            m = measure(k, reward, args.seconds, args.rounds)
            step_cpu = 1e6 / m["cpu_rate"]
            print(
                f"| {k} | {reward} | {m['rate']:,.0f} | {m['cpu_rate']:,.0f} | {goal:,} | {m['cpu_rate'] / goal:.2f}x "
                f"| {step_cpu:,.0f} | {m['cpu_floor'] * 1e6:,.0f} | {step_cpu / (m['cpu_floor'] * 1e6):.2f} |",
                flush=True,
            )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.sac_steps:
        share, total = sac_env_share(args.sac_steps)
        print(f"SB3 SAC, K=5, {args.sac_steps} steps: {total:.1f} s, env share {share:.1%}")


if __name__ == "__main__":
    main()
