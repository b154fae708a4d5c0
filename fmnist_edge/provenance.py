"""Where a result came from: command line, git commit, time and machine."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the git checkout holding ``cwd`` (default: this package), with ``-dirty`` when
    tracked files differ; ``None`` outside a checkout or without git."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a module already imported
    counts: some, like ``cv2``, replace themselves and have no ``__spec__`` then)."""
    import importlib.util

    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (missing ones are left out)."""
    import importlib.metadata

    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


#: x86 CPU flags (``/proc/cpuinfo``) of the instructions int8 inference kernels use, best
#: first: AMX tiles, AVX-512 VNNI, AVX-VNNI (256-bit), then plain AVX-512BW / AVX2, whose
#: int8 multiply-adds go through int16 (and can saturate in onnxruntime). On ARM: ``asimddp``
#: (the dot-product instructions, SDOT/UDOT), else ``asimd``.
INT8_ISAS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "asimddp", "asimd")


def int8_isa(flags: set[str]) -> str | None:
    """The best of :data:`INT8_ISAS` among a CPU's flags, ``None`` for none: the one word
    that decides whether int8 beats fp32 on a CPU (README, "Speed against the other
    runtimes")."""
    return next((isa for isa in INT8_ISAS if isa in flags), None)


def machine() -> dict:
    """The one machine description of every result: CPU model, cores, its best int8
    instructions (:func:`int8_isa`), OS, Python and the 1/5/15-minute load average (what
    else ran)."""
    cpu = platform.processor() or platform.machine()
    isa = None
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        # x86: "model name"; Raspberry Pi: "model name" (core) and "Model" (board).
        names = [fields[k] for k in ("model name", "Model", "Hardware") if fields.get(k)]
        cpu = " / ".join(dict.fromkeys(names)) or cpu
        isa = int8_isa(set((fields.get("flags") or fields.get("Features") or "").split()))
    except OSError:
        pass
    try:
        load_average = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load_average = None
    return {"cpu": cpu, "cores": os.cpu_count(), "int8_isa": isa,
            "platform": platform.platform(),
            "python": platform.python_version(), "load_average_1_5_15_min": load_average}


def provenance() -> dict:
    """``{"command", "commit", "utc", "machine"}`` for the current process."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
        "commit": git_commit(),
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
