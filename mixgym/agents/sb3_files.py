"""SB3 policy files that load without running code from the file.

An SB3 preset saves SB3's own zip (stable_baselines3/common/save_util.py): a ``data`` entry of
JSON whose non-trivial values (spaces, schedules, classes, the last observation) are
*cloudpickled*, and ``.pth`` entries of network and optimiser weights. SB3's ``load`` unpickles
``data``, so a crafted zip runs code as it loads; the ``.pth`` entries are read with
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only.

mixgym adds ``mixgym.json`` (the preset, its options, the environment it was made for) and
``mixgym.sig``: an HMAC-SHA256, under this installation's key (`mixgym.trust`), of every other
entry. `load_sb3` then takes one of two paths:

- the file is signed by this installation, or the caller says it is trusted
  (``trusted=True``, ``mixgym eval --trust``): SB3's own ``load``, which restores everything
  SB3 saved (counters, the last observation, schedules);
- otherwise -- a policy someone shared, an older mixgym's file -- a *rebuild*: the preset is
  made afresh from ``mixgym.json`` on the given environment (`make_agent`: the same networks
  and optimisers), then every network's and optimiser's state is read from the ``.pth``
  entries with ``torch.load(weights_only=True)``, only under the names the model itself saves
  (``_get_torch_save_params``), shapes checked by ``load_state_dict``. ``data`` is never read.
  What a rebuild does not restore: SB3's counters and last observation (a loaded policy acts,
  or learns afresh, as after ``learn(reset_num_timesteps=True)``), and ``tensorboard_log``
  (where a file says to write is not the loader's choice). SB3 arguments that are Python
  objects (``sb3_kwargs`` with classes or callables) cannot be rebuilt from JSON: such a file
  loads only when trusted.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_getattr, recursive_setattr

from mixgym.trust import UntrustedFile, sign, verify

SIGNATURE_NAME = "mixgym.sig"


def _signed_parts(archive: zipfile.ZipFile) -> list[bytes]:
    """Every entry but the signature, name and bytes, in name order."""
    parts = []
    for name in sorted(n for n in archive.namelist() if n != SIGNATURE_NAME):
        parts += [name.encode(), archive.read(name)]
    return parts


def sign_zip(path: Path) -> None:
    """Add this installation's signature of every entry of the zip at `path`."""
    with zipfile.ZipFile(path) as archive:
        signature = sign(*_signed_parts(archive))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(SIGNATURE_NAME, signature)


def signed_here(path: Path) -> bool:
    """Whether the zip at `path` carries this installation's valid signature of all its entries."""
    with zipfile.ZipFile(path) as archive:
        if SIGNATURE_NAME not in archive.namelist():
            return False
        return verify(archive.read(SIGNATURE_NAME), *_signed_parts(archive))


def json_clean(value: Any) -> bool:
    """Whether `value` survives a JSON round trip unchanged (tuples read back as lists)."""
    try:
        return json.loads(json.dumps(value)) == _listed(value)
    except (TypeError, ValueError):
        return False


def _listed(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def load_weights(model: BaseAlgorithm, path: Path) -> None:
    """Put the weights and optimiser states in `path`'s ``.pth`` entries into `model`, unpickling
    nothing but tensors and plain containers (see the module docstring)."""
    state_names, variable_names = model._get_torch_save_params()
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        wanted = [f"{name}.pth" for name in state_names] + (["pytorch_variables.pth"] if variable_names else [])
        missing = [entry for entry in wanted if entry not in names]
        if missing:
            raise ValueError(f"{str(path)!r} lacks {missing}, which a {type(model).__name__} policy needs")
        loaded = {}
        for entry in wanted:
            try:
                loaded[entry] = th.load(io.BytesIO(archive.read(entry)), map_location=model.device, weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
                raise UntrustedFile(
                    f"{str(path)!r}: its entry {entry} holds more than tensors ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}); loading it would run code from the file. If you trust "
                    "the file, load it with trusted=True (mixgym eval --trust)"
                ) from None
    params = {name: loaded[f"{name}.pth"] for name in state_names}
    try:
        model.set_parameters(params, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{str(path)!r} does not fit the preset's networks: {str(error).splitlines()[0]}") from None
    variables = loaded.get("pytorch_variables.pth", {})
    for name in variable_names:
        value, current = variables.get(name) if isinstance(variables, dict) else None, recursive_getattr(model, name)
        if current is None:
            continue
        if not isinstance(value, th.Tensor) or value.shape != current.shape:
            raise ValueError(f"{str(path)!r}: variable {name} is {value!r}, not a tensor of shape {tuple(current.shape)}")
        recursive_setattr(model, f"{name}.data", value.data)
