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
