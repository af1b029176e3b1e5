"""The benchmarks' own set-up step: what the peer systems and the plots need, installed
with the ordinary clients when missing, saying what it does.

Nothing here is a dependency of phalanx itself; a fresh clone gets them the first time a
benchmark that needs them runs (see `docs/performance.md`).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

#: What `apt-get install` adds for the etcd peer (Debian's packages).
ETCD_PACKAGES = ("etcd-server", "etcd-client")


def _run(argv: list[str]) -> None:
    print(f"setup: running: {' '.join(argv)}", flush=True)
    subprocess.run(argv, check=True)


def ensure_python_package(module: str, requirement: str) -> None:
    """Installs `requirement` with pip into this interpreter when `module` is missing."""
    if importlib.util.find_spec(module) is not None:
        return
    print(f"setup: Python module {module!r} is missing; installing {requirement!r} with pip")
    _run([sys.executable, "-m", "pip", "install", "--quiet", requirement])
    importlib.invalidate_caches()


def ensure_executable(name: str, requirement: str) -> str:
    """The path of a program pip installs beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is not None:
        return found
    print(f"setup: program {name!r} is missing; installing {requirement!r} with pip")
    _run([sys.executable, "-m", "pip", "install", "--quiet", requirement])
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"pip installed {requirement} but {name} is not to be found")
    return found


def ensure_etcd() -> str:
    """The path of the `etcd` binary, installing Debian's etcd-server when it is absent."""
    found = shutil.which("etcd")
    if found is not None:
        return found
    print("setup: `etcd` is not on PATH; installing Debian's " + " and ".join(ETCD_PACKAGES))
    _run(["apt-get", "update"])
    _run(["apt-get", "install", "-y", *ETCD_PACKAGES])
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("apt-get installed etcd-server but `etcd` is still not on PATH")
    return found


def ensure_plotting() -> None:
    ensure_python_package("matplotlib", "matplotlib")
