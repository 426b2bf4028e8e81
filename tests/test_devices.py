"""GPU-ready choices (device, bf16 autocast, fused AdamW, torch.compile): the selection
logic a CUDA machine would take, and the CPU paths run for real."""

import numpy as np
import pytest

from mixgym.llm_backend.devices import adamw_options, autocast_dtype, resolve_device

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from mixgym.llm_backend.hf import HFBackend  # noqa: E402

TINY = {"model": "pythia-tiny", "seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 3, "total_steps": 4}
UNIFORM = np.full(5, 0.2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_cuda_machine_gets_its_local_gpu_bf16_and_fused_adamw() -> None:
    assert resolve_device("auto", cuda_available=True, local_rank=3) == "cuda:3"
    assert resolve_device("cuda", cuda_available=True, local_rank=1) == "cuda:1"
    assert resolve_device("cuda:2", cuda_available=True) == "cuda:2"
    assert autocast_dtype("auto", "cuda", bf16_supported=True) == "bfloat16"
    assert autocast_dtype("auto", "cuda", bf16_supported=False) is None  # e.g. a V100: fp32
    assert autocast_dtype("fp32", "cuda", bf16_supported=True) is None
    assert adamw_options("cuda", fused=None) == {"fused": True}
    assert adamw_options("cuda", fused=False) == {}


def test_a_cpu_machine_falls_back_to_fp32_and_the_default_adamw() -> None:
    assert resolve_device("auto", cuda_available=False, local_rank=3) == "cpu"
    assert autocast_dtype("auto", "cpu", bf16_supported=False) is None
    assert autocast_dtype("bf16", "cpu", bf16_supported=False) == "bfloat16"  # asked for: CPU autocast has bf16
    assert adamw_options("cpu", fused=None) == {}
    backend = HFBackend(**TINY)  # device="auto", precision="auto"
    assert backend.model.device.type == "cpu" and not backend.optimizer.defaults.get("fused")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: resolve_device("cuda", cuda_available=False), "CUDA is not available"),
        (lambda: resolve_device("tpu", cuda_available=True), "unknown device 'tpu'.*auto, cpu, cuda, cuda:N"),
        (lambda: autocast_dtype("fp16", "cuda", True), "unknown precision 'fp16'.*auto, fp32, bf16"),
        (lambda: autocast_dtype("bf16", "cuda", bf16_supported=False), "does not support bf16"),
        (lambda: HFBackend(**TINY, precision="half"), "unknown precision 'half'"),
        (lambda: HFBackend(**TINY, fused_adamw="yes"), "fused_adamw"),
        (lambda: HFBackend(**TINY, compile=""), "compile"),
        (lambda: resolve_device("cuda:7", cuda_available=True, device_count=2), r"device='cuda:7' but this machine has 2 CUDA device\(s\) \(cuda:0 .. cuda:1\)"),
        (lambda: HFBackend(**TINY, device="cuda:7"), "device='cuda:7' but this machine has"),
    ],
)
def test_bad_device_settings_name_the_value(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):  # a value of the wrong type is a TypeError
        call()


def test_bf16_autocast_trains_with_fp32_master_weights() -> None:
    fp32, bf16 = HFBackend(**TINY, precision="fp32"), HFBackend(**TINY, precision="bf16")
    before = bf16.evaluate()
    a, b = fp32.train(UNIFORM, 3), bf16.train(UNIFORM, 3)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(v.dtype == torch.float32 for state in bf16.optimizer.state.values() for v in state.values() if v.dim())
    assert np.allclose(a.train_loss, b.train_loss, atol=0.02) and not np.array_equal(a.train_loss, b.train_loss)
    assert sum(bf16.evaluate().values()) < sum(before.values())
    gradients_32, gradients_16 = fp32.domain_gradients(), bf16.domain_gradients()
    cosine = np.sum(gradients_32 * gradients_16) / np.linalg.norm(gradients_32) / np.linalg.norm(gradients_16)
    assert cosine > 0.99


def test_fused_adamw_and_compile_give_the_eager_results() -> None:
    eager = HFBackend(**TINY)
    expected = eager.train(UNIFORM, 2)
    fused = HFBackend(**TINY, fused_adamw=True)
    assert fused.optimizer.defaults["fused"] is True
    np.testing.assert_allclose(fused.train(UNIFORM, 2).train_loss, expected.train_loss, rtol=1e-6)
    # aot_eager runs AOTAutograd's compiled backward (the path inductor uses on a GPU) without
    # a C++ compiler: the gradient hooks must still see every micro-batch
    compiled = HFBackend(**TINY, compile="aot_eager")
    np.testing.assert_allclose(compiled.train(UNIFORM, 2).train_loss, expected.train_loss, rtol=1e-6)
    np.testing.assert_allclose(compiled.domain_gradients(), eager.domain_gradients(), rtol=1e-5, atol=1e-7)
    assert type(compiled.model).__name__ == type(eager.model).__name__  # checkpoints hold the plain model
    assert set(compiled.state_dict()["model"]) == set(eager.state_dict()["model"])
