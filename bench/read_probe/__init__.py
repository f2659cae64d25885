"""The lab's cache read probe: how fast one core reads N bytes of cached data with an ISA's widest loads.

It is benchmark-only C++, so it is not part of fastlstm's extension: the first use compiles it (about
10 s) into a temporary directory named after a digest of its sources and the headers it takes from
csrc/, and later uses load that build. Each read_probe_<isa>.cc gets only its own ISA's flags, the same
flags setup.py gives csrc/kernels/kernels_<isa>.cc, so the probe reads as the extension's kernels do.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent.parent / "csrc"
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# Must equal setup.py's ISA_FLAGS (tests/test_bench_lab.py checks): the probe must load as the kernels do.
ISA_FLAGS: Dict[str, List[str]] = {
    "kernels_avx2.cc": ["-mavx2", "-mfma"],
    "kernels_avx512.cc": ["-mavx512f", "-mavx2", "-mfma", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
    "kernels_avx512_vnni.cc": ["-mavx512f", "-mavx512vnni", "-mavx2", "-mfma", "-Wno-uninitialized",
                               "-Wno-maybe-uninitialized"],
}
COMPILE_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-pthread"]
MODULE_NAME = "_read_probe"


def sources() -> Dict[str, List[str]]:
    """Each translation unit and its extra flags."""
    units = {"read_probe_module.cc": ["-DREAD_PROBE_X86_64"] if IS_X86_64 else [], "read_probe_scalar.cc": []}
    if IS_X86_64:
        units["read_probe_avx2.cc"] = ISA_FLAGS["kernels_avx2.cc"]
        units["read_probe_avx512.cc"] = ISA_FLAGS["kernels_avx512.cc"]
    return units


def build_dir() -> Path:
    """Where this version of the sources is built: a digest of every input, so an edit rebuilds."""
    digest = hashlib.sha256(" ".join(COMPILE_FLAGS + [str(sysconfig.get_config_var("EXT_SUFFIX"))]).encode())
    for path in sorted(HERE.glob("*.[ch]*")) + sorted(CSRC.rglob("*.h")):
        digest.update(path.name.encode() + path.read_bytes())
    return Path(tempfile.gettempdir()) / f"fastlstm-read-probe-{digest.hexdigest()[:16]}"


def build(target: Path) -> None:
    """Compile and link the module into target (written under another name, then renamed, so that a
    concurrent build or an interrupted one never leaves a half-written module behind)."""
    import pybind11

    compiler = os.environ.get("CXX", "g++")
    includes = [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    objects = []
    for name, flags in sources().items():
        obj = target.parent / (name + ".o")
        command = [compiler, *COMPILE_FLAGS, *includes, *flags, "-c", str(HERE / name), "-o", str(obj)]
        subprocess.run(command, check=True)
        objects.append(str(obj))
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    subprocess.run([compiler, "-shared", "-pthread", *objects, "-o", str(partial)], check=True)
    os.replace(partial, target)


@functools.lru_cache(maxsize=None)
def load() -> ModuleType:
    """The compiled module, built first if this version of the sources has not been."""
    directory = build_dir()
    target = directory / (MODULE_NAME + sysconfig.get_config_var("EXT_SUFFIX"))
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        try:
            build(target)
        except (ImportError, OSError, subprocess.CalledProcessError) as error:
            raise RuntimeError(f"cannot build bench/read_probe (it needs a C++17 compiler and pybind11): {error}") from error
    spec = importlib.util.spec_from_file_location(MODULE_NAME, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_read_seconds(nbytes: int, passes: int, repeats: int, isa: Optional[str] = None) -> float:
    """Best seconds per pass reading `nbytes` of cached data (see measure_read.h), with the loads of
    `isa` (default: the kernel set fastlstm runs, as fastlstm.cpu_info() names it)."""
    if isa is None:
        import fastlstm

        isa = fastlstm.cpu_info()["isa"]
    return load().measure_read_seconds(isa, nbytes, passes, repeats)
