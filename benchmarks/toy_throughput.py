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

The vector env (`mixgym.envs.vector.ToyVectorEnv`, N runs per call) is timed per CPU second
for N in ``--sizes``, beside the core's arithmetic limit: the FLOPs of one env step (ten SGD
steps, the held-out evaluation and, for the gradient rewards, the probe gradients; `flops`)
over this core's sgemm rate measured in the same run on 512 x 512 matrices. SB3's PPO is
timed per million decisions on one env and on the vector env (``--ppo-steps``).

    python benchmarks/toy_throughput.py [--seconds 4] [--rounds 8] [--sac-steps 2000]
        [--sizes 1,8,64,256,1024] [--vector-seconds 3] [--ppo-steps 20000]

Prints Markdown tables; BENCHMARKS.md records the results.
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


def flops(num_domains: int, reward: str) -> float:
    """FLOPs of one env step of the default toy: 10 SGD steps (forward and backward, 6 FLOPs
    per parameter and example), the held-out forward pass (2 per parameter and example) and,
    for rewards that read gradients, a forward and backward pass over the probe sets."""
    from mixgym.llm_backend import ToyConfig

    cfg = ToyConfig(num_domains=num_domains)
    width = cfg.input_dim + num_domains + 1
    params = width * cfg.hidden_dim + cfg.hidden_dim**2 + cfg.hidden_dim
    total = 10 * 6 * cfg.batch_size * params + 2 * num_domains * cfg.eval_size * params
    if reward in ("alignment", "holistic"):
        total += 6 * num_domains * cfg.probe_size * params
    return float(total)


def sgemm_rate(seconds: float = 1.0) -> float:
    """This core's float32 matrix-product rate, FLOP per CPU second (512 x 512 x 512)."""
    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    np.dot(a, a)
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        np.dot(a, a)
        count += 1
    return count * 2 * 512**3 / (time.process_time() - start)


def measure_vector(num_domains: int, reward: str, num_envs: int, seconds: float) -> float:
    """Env steps per CPU second of a `ToyVectorEnv` of `num_envs` runs (random actions,
    autoresets included)."""
    from mixgym.envs.vector import ToyVectorEnv

    envs = ToyVectorEnv(num_envs=num_envs, num_domains=num_domains, reward=reward)
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (50, num_envs, num_domains)).astype(np.float32)
    envs.step(actions[0])
    calls, start = 0, time.process_time()
    while time.process_time() - start < seconds or calls < 2:
        envs.step(actions[calls % len(actions)])
        calls += 1
    return calls * num_envs / (time.process_time() - start)


def ppo_seconds_per_million(timesteps: int, num_envs: int) -> float:
    """Wall seconds SB3 PPO (default settings, K=5 toy) takes per million decisions on
    `num_envs` batched toy runs (1: a single env in SB3's DummyVecEnv)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from mixgym.envs.sb3_vec import SB3VecEnv

    env = DummyVecEnv([lambda: MixingEnv(reward="alignment")]) if num_envs == 1 else SB3VecEnv(num_envs, reward="alignment")
    model = PPO("MlpPolicy", env, n_steps=max(2048 // num_envs, 16), seed=0, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    return (time.perf_counter() - start) / timesteps * 1e6


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
    parser.add_argument("--sizes", default="1,8,64,256,1024", help="vector env sizes N (comma-separated; empty: skip)")
    parser.add_argument("--vector-seconds", type=float, default=3.0, help="CPU seconds per vector cell")
    parser.add_argument("--ppo-steps", type=int, default=20000, help="PPO decisions per measurement (0: skip)")
    parser.add_argument("--skip-single", action="store_true", help="skip the single-env table")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
        rate = sgemm_rate()
        print(f"sgemm, one thread, 512^3: {rate / 1e9:.1f} GFLOP per CPU second\n")
        print("| K | reward | MFLOP/step | limit steps/s | " + " | ".join(f"N={n}" for n in sizes) + " | goal | best / limit |")
        print("|---|---|---|---|" + "---|" * len(sizes) + "---|---|")
        for k, goal in GOALS.items():
            for reward in REWARDS:
                limit = rate / flops(k, reward)
                rates = [measure_vector(k, reward, n, args.vector_seconds) for n in sizes]
                print(
                    f"| {k} | {reward} | {flops(k, reward) / 1e6:.1f} | {limit:,.0f} | "
                    + " | ".join(f"{r:,.0f}" for r in rates)
                    + f" | {goal:,} | {max(rates) / limit:.0%} |",
                    flush=True,
                )
        print()
    if args.ppo_steps:
        one, many = ppo_seconds_per_million(args.ppo_steps, 1), ppo_seconds_per_million(args.ppo_steps, 64)
        print(f"SB3 PPO, K=5, alignment, wall s per million decisions: 1 env {one:,.0f}, 64 batched envs {many:,.0f} ({one / many:.1f}x)\n")
    if args.skip_single:
        return
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
