#!/usr/bin/env bash
# CleanRL's SAC on mixgym, the way that works on Python 3.11: CleanRL's requirements install
# CleanRL itself (which needs Python < 3.11) and pin torch 2.4.1, so this builds a venv by hand:
# torch first (the CPU build on disk), then CleanRL's Gymnasium pin and the few packages its
# single-file scripts import, then mixgym; the script runs from the clone with PYTHONPATH=. and
# the "mixgym:" id prefix, which makes Gymnasium import mixgym (CleanRL's scripts never do).
#
#   examples/clients/cleanrl.sh /path/to/cleanrl [sac_continuous_action.py] [extra script args]
#   CHECK_ONLY=1 examples/clients/cleanrl.sh DIR   # build the venv, check the env, run no script
set -euo pipefail
cleanrl=${1:?usage: $0 CLEANRL_CLONE [SCRIPT] [ARGS...]}
script=${2:-sac_continuous_action.py}
shift $(( $# > 1 ? 2 : 1 ))
mixgym=$(cd "$(dirname "$0")/../.." && pwd)
venv=${CLEANRL_VENV:-$mixgym/.venv-cleanrl}

test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q "gymnasium==0.29.1" "numpy<2" tyro tensorboard
"$venv/bin/pip" install -q -e "$mixgym"
# what CleanRL's script does with the id, checked before it runs
"$venv/bin/python" -c 'import gymnasium as gym; env = gym.make("mixgym:mixgym/Mixing-v1", total_steps=20); env.reset(seed=0); env.step(env.action_space.sample()); print("mixgym:mixgym/Mixing-v1 on gymnasium", gym.__version__)'
if [ -n "${CHECK_ONLY:-}" ]; then exit 0; fi
cd "$cleanrl"
PYTHONPATH=. "$venv/bin/python" "cleanrl/$script" --env-id mixgym:mixgym/Mixing-v1 --total-timesteps 20000 "$@"
