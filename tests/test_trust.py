"""Files are data, not code: crafted policies and checkpoints that would run code do not.

Each proof of concept writes a marker file when unpickled; the tests show first that the
payload is live (unpickling it does write the marker) and then that mixgym's loaders never
unpickle it unless told the file is trusted.
"""

import base64
import hashlib
import io
import json
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mixgym.agents import load_agent, make_agent
from mixgym.agents.compare import env_for
from mixgym.agents.sb3_files import SIGNATURE_NAME
from mixgym.checkpoint import CheckpointStore, UntrustedCheckpoint, decode, encode
from mixgym.experiment import ExperimentConfig, run_experiment
from mixgym.trust import KEY_ENV, UntrustedFile, key_path, sign, signing_key

SMALL = {"total_steps": 100}


class Payload:
    """Unpickling this creates `marker` (what an attacker's pickle would do instead: anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def craft_policy(source: Path, target: Path, marker: Path, keep_signature: bool) -> None:
    """`source`'s entries, with a cloudpickled payload planted in SB3's "data" entry."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    data["observation_space"][":serialized:"] = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    entries["data"] = json.dumps(data).encode()
    if not keep_signature:
        entries.pop(SIGNATURE_NAME)
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


@pytest.mark.parametrize("keep_signature", [False, True], ids=["unsigned", "stale-signature"])
def test_a_crafted_policy_zip_runs_no_code_and_still_loads_its_weights(tmp_path, keep_signature) -> None:
    env = env_for("hds", SMALL)
    agent = make_agent("hds", env, seed=0, net_width=16)
    agent.learn(30)
    agent.save(tmp_path / "honest.zip")
    marker = tmp_path / "pwned"
    craft_policy(tmp_path / "honest.zip", tmp_path / "shared.zip", marker, keep_signature)

    loaded = load_agent(tmp_path / "shared.zip", env)
    assert not marker.exists()
    for key, value in agent.model.policy.state_dict().items():  # every weight came through
        assert torch.equal(value, loaded.model.policy.state_dict()[key]), key
    assert torch.equal(agent.model.log_ent_coef, loaded.model.log_ent_coef)  # and SAC's entropy variable
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])

    with pytest.raises(UntrustedFile, match="pass env=.*trusted=True"):
        load_agent(tmp_path / "shared.zip")  # a rebuild needs the env
    assert not marker.exists()
    with pytest.raises(ValueError):  # the user vouches for it: SB3's load runs the payload (then fails)
        load_agent(tmp_path / "shared.zip", env, trusted=True)
    assert marker.exists()


def test_own_policies_load_with_sb3_and_a_tensor_entry_that_is_not_a_tensor_is_refused(tmp_path) -> None:
    env = env_for("ppo", SMALL)
    agent = make_agent("ppo", env, seed=0)
    agent.save(tmp_path / "ppo.zip")
    assert load_agent(tmp_path / "ppo.zip").model.num_timesteps == 0  # signed here: no env needed
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "ppo.zip") as archive:
        entries = {n: archive.read(n) for n in archive.namelist() if n != SIGNATURE_NAME}
    buffer = io.BytesIO()
    torch.save({"weights": Payload(marker)}, buffer)  # torch.save pickles arbitrary objects too
    entries["policy.pth"] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    with pytest.raises(UntrustedFile, match="policy.pth holds more than tensors"):
        load_agent(tmp_path / "evil.zip", env)
    assert not marker.exists()


def test_python_objects_in_sb3_kwargs_need_trust_to_load_from_elsewhere(tmp_path) -> None:
    env = env_for("td3", SMALL)
    agent = make_agent("td3", env, seed=0, sb3_kwargs={"policy_kwargs": {"activation_fn": torch.nn.Tanh, "net_arch": [8]}})
    agent.save(tmp_path / "td3.zip")
    assert isinstance(load_agent(tmp_path / "td3.zip", env).model.actor.mu[1], torch.nn.Tanh)  # signed here
    with zipfile.ZipFile(tmp_path / "td3.zip") as archive:
        entries = {n: archive.read(n) for n in archive.namelist() if n != SIGNATURE_NAME}
    with zipfile.ZipFile(tmp_path / "copied.zip", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    with pytest.raises(UntrustedFile, match="sb3_kwargs.*trusted=True"):
        load_agent(tmp_path / "copied.zip", env)
    assert isinstance(load_agent(tmp_path / "copied.zip", env, trusted=True).model.actor.mu[1], torch.nn.Tanh)


def crafted_checkpoint(marker: Path, signed_with: bytes | None) -> bytes:
    """A checkpoint file with an intact checksum whose payload creates `marker`."""
    body = pickle.dumps(Payload(marker))
    digest = hashlib.sha256(body).hexdigest().encode()
    if signed_with is None:  # mixgym's earlier, checksum-only format
        return b"MIXGYM-CHECKPOINT-1\n" + digest + b"\n" + body
    import hmac

    mac = hmac.new(signed_with, len(body).to_bytes(8, "little") + body, hashlib.sha256).hexdigest().encode()
    return b"MIXGYM-CHECKPOINT-2\n" + digest + b"\n" + mac + b"\n" + body


@pytest.mark.parametrize("signed_with", [None, b"k" * 32], ids=["checksum-only", "another-key"])
def test_a_crafted_checkpoint_runs_no_code_on_resume(tmp_path, signed_with) -> None:
    config = ExperimentConfig("exp3", env=SMALL, checkpoint_every=2)
    run_experiment(config, tmp_path)
    marker = tmp_path / "pwned"
    data = crafted_checkpoint(marker, signed_with)
    decode(data, trusted=True)  # the payload is live: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()
    (tmp_path / "checkpoints" / "checkpoint-99999999.ckpt").write_bytes(data)
    with pytest.raises(UntrustedCheckpoint, match="checkpoint-99999999.*not written by this installation.*--trust-checkpoint"):
        run_experiment(config, tmp_path, resume=True)
    assert not marker.exists()


def test_checkpoints_are_signed_and_a_flipped_signature_is_refused_not_skipped(tmp_path) -> None:
    store = CheckpointStore(tmp_path)
    path = store.save({"decision": 1}, 1)
    assert decode(path.read_bytes()) == {"decision": 1}
    data = bytearray(path.read_bytes())
    start = data.index(b"\n", len(b"MIXGYM-CHECKPOINT-2\n")) + 1  # the signature line
    data[start] = ord("0") if data[start] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    with pytest.raises(UntrustedCheckpoint):
        store.load_latest()
    assert store.load_latest(trusted=True)[0] == {"decision": 1}
    assert decode(encode([1, 2])) == [1, 2]


def test_the_key_is_private_and_made_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "conf" / "signing.key"))
    first = sign(b"x")
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600 and len(signing_key()) == 32
    assert sign(b"x") == first
    os.chmod(key_path(), 0o644)
    with pytest.raises(ValueError, match="readable or writable by other users.*chmod 600"):
        sign(b"x")
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "other.key"))
    assert sign(b"x") != first  # another installation's key: its signatures do not verify here
