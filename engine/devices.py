"""Which devices PyTorch can run on here, and turning a user's device name into a checked one."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from engine.jobs import JobError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DeviceInfo:
    id: str  # what torch.device() takes: "cpu", "cuda:0", "mps"
    kind: str  # "cpu", "cuda", "rocm", "mps"
    name: str
    memory_bytes: int | None  # None where torch cannot tell (CPU: system memory is reported)
    problem: str | None = None  # why this device cannot be used (a GPU too old for the build)

    @property
    def label(self) -> str:
        """Human label for menus: 'cuda:0 — NVIDIA H100 (80.0 GB)'."""
        text = f"{self.id} — {self.name}"
        if self.memory_bytes:
            text += f" ({self.memory_bytes / 1e9:.1f} GB)"
        return f"{text} — not usable: {self.problem}" if self.problem else text

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


_ALLOCATOR_TUNED = False


def keep_freed_memory_for_reuse() -> bool:
    """Have glibc's malloc keep freed buffers of up to 32 MB for reuse instead of returning them
    to the system (Linux; elsewhere a no-op returning False).

    CPU training frees and re-allocates the same multi-megabyte activation buffers every step.
    By default glibc hands such buffers back (munmap, heap trimming) and the next step pays a
    page fault per 4 KB page to get them again: ~9 ms of kernel time per step of the Fast CPU
    net, ~5% of its speed. The cost is that the process keeps its peak heap.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        # 32 MB is the largest mmap threshold glibc accepts on 64-bit systems.
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1
        ok = libc.mallopt(m_trim_threshold, 1 << 30) == 1 and ok
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    _ALLOCATOR_TUNED = ok
    return ok


@contextlib.contextmanager
def true_fp32(device: torch.device):
    """fp32 that is fp32 on CUDA GPUs: cuDNN convolutions default to TF32 (10-bit mantissa),
    which moved Classify's probabilities by ~1e-3 (measured on an H100). Process-wide flags, so
    put back afterwards."""
    import torch

    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def cuda_has_native_bf16(device) -> bool:
    """Whether a CUDA GPU computes in bf16 in hardware (compute capability 8.0 on: A100, RTX 30xx,
    H100). ``torch.cuda.is_bf16_supported()`` also says yes to older GPUs, which emulate it
    slowly and have no cuDNN bf16 convolutions. ROCm builds answer for themselves."""
    import torch

    index = torch.device(device).index
    return _cuda_has_native_bf16(torch.cuda.current_device() if index is None else index)


@functools.cache  # asked by Muon for every matrix at every step
def _cuda_has_native_bf16(index: int) -> bool:
    import torch

    if getattr(torch.version, "hip", None):
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(index) >= (8, 0)


@functools.cache  # asked whenever the Fast recipe is looked up (the GUI: at every model change)
def cpu_has_native_bf16() -> bool:
    """True when the CPU does bf16 math in hardware (AVX512-BF16 or AMX)."""
    import torch

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except Exception:
                pass
    return False


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def _system_memory() -> int | None:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_ARCH = re.compile(r"(sm|compute)_(\d+)(\d)[a-z]*")


def cuda_build_problem(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """Why a GPU of ``capability`` cannot run this PyTorch build (None: it can). Compiled
    kernels (sm_XY) run on the same major version from minor Y up; PTX (compute_XY) is
    compiled by the driver for any GPU from XY on."""
    if not arch_list:  # the build does not say
        return None
    for arch in arch_list:
        match = _ARCH.fullmatch(arch)
        if match is None:
            continue
        kind, version = match.group(1), (int(match.group(2)), int(match.group(3)))
        if kind == "sm" and version[0] == capability[0] and version[1] <= capability[1]:
            return None
        if kind == "compute" and version <= capability:
            return None
    major, minor = capability
    return (f"compute capability {major}.{minor} is not among this PyTorch build's "
            f"({', '.join(arch_list)}); install a PyTorch build for this GPU")


def list_devices() -> list[DeviceInfo]:
    """CPU first, then every CUDA/ROCm GPU, then Apple MPS when available."""
    import os

    import torch

    cores = os.cpu_count() or 1
    devices = [DeviceInfo("cpu", "cpu", f"{_cpu_name()}, {cores} cores", _system_memory())]
    if torch.cuda.is_available():
        kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        arch_list = [] if kind == "rocm" else torch.cuda.get_arch_list()
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            problem = cuda_build_problem((props.major, props.minor), arch_list)
            devices.append(DeviceInfo(f"cuda:{i}", kind, props.name, int(props.total_memory),
                                      problem))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(DeviceInfo("mps", "mps", "Apple GPU (MPS)", None))
    return devices


def resolve_device(name: str | None) -> str:
    """Check a device name ("cpu", "cuda", "cuda:1", "mps", "auto") and return a canonical id.

    Raises :class:`JobError` with the list of usable devices when the name is unknown or absent.
    """
    import torch

    name = (name or "cpu").strip().lower()
    devices = list_devices()
    available = [d.id for d in devices if not d.problem]
    if name == "auto":
        return available[1] if len(available) > 1 else "cpu"
    asked = name  # named as typed in messages: "cuda", not "cuda:0"
    if name == "cuda" or name == "gpu":
        name = "cuda:0"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise JobError(f"unknown device '{asked}'; available: {', '.join(available)}") from None
    canonical = f"{dev.type}:{dev.index}" if dev.type == "cuda" else dev.type
    unusable = {d.id: d for d in devices if d.problem}
    if canonical in unusable:
        raise JobError(f"{canonical} ({unusable[canonical].name}) cannot be used: "
                       f"{unusable[canonical].problem}")
    if canonical not in available:
        no_gpu = dev.type == "cuda" and not any(d.id.startswith("cuda") for d in devices)
        raise JobError(f"device '{asked}' is not available here; available: "
                       f"{', '.join(available)}" + (" (torch finds no GPU)" if no_gpu else ""))
    return canonical
