"""What about this machine and this build makes the ops slow: the extension without OpenMP,
a CPU without AVX2, a GPU held at low clocks or throttled."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import torch


def extension_path() -> str | None:
    """The compiled extension's file."""
    from .. import _C

    return getattr(_C, "__file__", None)


def openmp_linked() -> bool | None:
    """Whether the extension calls OpenMP (``GOMP_parallel`` among its dynamic symbols): without
    it ``at::parallel_for`` runs on one thread. None when ``nm`` cannot tell."""
    path, nm = extension_path(), shutil.which("nm")
    if path is None or nm is None:
        return None
    try:
        syms = subprocess.run([nm, "-D", path], capture_output=True, text=True, timeout=30,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return "GOMP_parallel" in syms or "__kmpc_fork_call" in syms


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_state(device: torch.device) -> dict:
    """Name, and from ``nvidia-smi`` where it is installed: performance state, SM clock and its
    maximum, active clock-throttle reasons."""
    info: dict = {"name": torch.cuda.get_device_name(device)}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return info
    fields = "pstate,clocks.sm,clocks.max.sm,clocks_throttle_reasons.active"
    try:
        out = subprocess.run([smi, f"--id={device.index or 0}", f"--query-gpu={fields}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return info
    parts = [p.strip() for p in out.split(",")]
    if len(parts) == 4:
        info.update(pstate=parts[0], sm_clock_mhz=parts[1], max_sm_clock_mhz=parts[2],
                    throttle_reasons=parts[3])
    return info


def machine_info(device: torch.device) -> dict:
    """What the results depend on: device, CPU, threads, torch, and the build's OpenMP."""
    flags = cpu_flags()
    info = {"device": device.type, "cpu": cpu_name(), "cpus": torch.get_num_threads(),
            "torch": torch.__version__, "openmp": openmp_linked(),
            "avx2": "avx2" in flags if flags and platform.machine() in ("x86_64", "AMD64")
            else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        info["gpu"] = gpu_state(device)
    return info


def warnings_for(info: dict) -> list[str]:
    """One line per thing in ``info`` that makes this machine or build slow."""
    out = []
    if info.get("openmp") is False:
        out.append("the extension is built without OpenMP (no GOMP_parallel in `nm -D "
                   f"{extension_path()}`): the CPU ops run on one thread; rebuild with a "
                   "compiler that has OpenMP (see docs/development.md)")
    if info.get("avx2") is False:
        out.append("this CPU has no AVX2 (/proc/cpuinfo flags): the CPU ops run without wide "
                   "vectors")
    gpu = info.get("gpu", {})
    reasons = gpu.get("throttle_reasons", "")
    try:
        throttled = int(reasons, 16) & ~0x1  # bit 0: idle, which is no throttle
    except ValueError:
        throttled = 0
    if throttled:
        out.append(f"the GPU reports clock-throttle reasons {reasons} (nvidia-smi -q -d "
                   "PERFORMANCE says which): power, thermal or an application clock limit")
    if gpu.get("pstate") not in (None, "P0"):
        out.append(f"the GPU was in performance state {gpu['pstate']} after the run, not P0")
    return out
