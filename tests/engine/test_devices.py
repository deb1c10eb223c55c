"""engine/devices.py helpers that the CLI tests do not cover."""

from __future__ import annotations

import sys

import torch

from engine import devices


def test_allocator_tuning_is_applied_once_on_linux_and_skipped_elsewhere(monkeypatch):
    if sys.platform.startswith("linux"):
        assert devices.keep_freed_memory_for_reuse() is True
        assert devices.keep_freed_memory_for_reuse() is True  # idempotent
    monkeypatch.setattr(devices, "_ALLOCATOR_TUNED", False)
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert devices.keep_freed_memory_for_reuse() is False


def test_fp32_on_cuda_turns_tf32_off_and_back_on():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with devices.true_fp32(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32  # nothing to do off CUDA
        with devices.true_fp32(torch.device("cuda", 0)):  # the flags exist without a GPU too
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_gpu_older_than_the_build_is_listed_with_the_reason(monkeypatch):
    from types import SimpleNamespace

    import pytest

    from engine.jobs import JobError

    build = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
    assert devices.cuda_build_problem((9, 0), build) is None
    assert devices.cuda_build_problem((8, 9), build) is None  # sm_86 kernels run on 8.9
    assert devices.cuda_build_problem((13, 0), build) is None  # PTX, compiled by the driver
    assert devices.cuda_build_problem((6, 1), build).startswith("compute capability 6.1 is not")
    assert devices.cuda_build_problem((6, 1), []) is None  # the build does not say

    gpus = {0: SimpleNamespace(name="NVIDIA H100", major=9, minor=0, total_memory=80e9),
            1: SimpleNamespace(name="GTX 1080", major=6, minor=1, total_memory=8e9)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", gpus.__getitem__)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: build)
    listed = {d.id: d for d in devices.list_devices()}
    assert listed["cuda:0"].problem is None and "not usable" not in listed["cuda:0"].label
    assert "not usable: compute capability 6.1" in listed["cuda:1"].label
    assert devices.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(JobError, match=r"cuda:1 \(GTX 1080\) cannot be used: compute capa"):
        devices.resolve_device("cuda:1")


def test_bf16_on_cuda_needs_compute_capability_8(monkeypatch):
    import pytest

    from engine.cifar.trainer import autocast_dtype
    from engine.jobs import JobError

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    gpu = torch.device("cuda", 0)
    for capability, auto in (((9, 0), torch.bfloat16), ((7, 5), torch.float16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        devices._cuda_has_native_bf16.cache_clear()
        assert autocast_dtype(gpu, "auto") == auto
        assert autocast_dtype(gpu, "fp16") == torch.float16
    with pytest.raises(JobError, match=r"Tesla T4 \(compute capability 7.5\) has no bfloat16"):
        autocast_dtype(gpu, "bf16")
    devices._cuda_has_native_bf16.cache_clear()


def test_a_device_that_is_not_here_is_named_as_the_user_typed_it(monkeypatch):
    import pytest

    from engine.jobs import JobError

    monkeypatch.setattr(devices, "list_devices", lambda: [devices.DeviceInfo("cpu", "cpu", "CPU",
                                                                               None)])
    for typed in ("cuda", "gpu", "cuda:2"):
        with pytest.raises(JobError) as refused:
            devices.resolve_device(typed)
        assert str(refused.value) == (f"device '{typed}' is not available here; available: cpu "
                                      "(torch finds no GPU)")
    with pytest.raises(JobError, match=r"^device 'mps' is not available here; available: cpu$"):
        devices.resolve_device("mps")
    one_gpu = [devices.DeviceInfo("cpu", "cpu", "CPU", None),
               devices.DeviceInfo("cuda:0", "cuda", "H100", None)]
    monkeypatch.setattr(devices, "list_devices", lambda: one_gpu)
    with pytest.raises(JobError, match=r"^device 'cuda:1' is not available here; available: "
                                       r"cpu, cuda:0$"):
        devices.resolve_device("cuda:1")
