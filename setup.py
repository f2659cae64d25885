"""Builds fastlstm._core. Each kernels_<isa>.cc gets only its own instruction-set flags, so the
extension runs on any x86-64 CPU and picks its kernels at import (no -march=native)."""

import os
import platform
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# Flags for the translation units that hold one ISA's kernels; everything else is baseline.
ISA_FLAGS = {
    "kernels_avx2.cc": ["-mavx2", "-mfma"],
    # GCC 12 warns spuriously on the _mm512_undefined_* inside its own min/max intrinsics.
    "kernels_avx512.cc": ["-mavx512f", "-mavx2", "-mfma", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
    "kernels_avx512_vnni.cc": ["-mavx512f", "-mavx512vnni", "-mavx2", "-mfma", "-Wno-uninitialized",
                               "-Wno-maybe-uninitialized"],
}

sources = [
    "csrc/bindings.cc",
    "csrc/cpu_features.cc",
    "csrc/linear.cc",
    "csrc/lstm.cc",
    "csrc/thread_pool.cc",
    "csrc/kernels/kernels_scalar.cc",
]
if IS_X86_64:
    sources += ["csrc/kernels/kernels_avx2.cc", "csrc/kernels/kernels_avx512.cc", "csrc/kernels/kernels_avx512_vnni.cc"]

extra_compile_args = ["-O3", "-fvisibility=hidden", "-pthread"]
extra_link_args = ["-pthread"]
if os.environ.get("FASTLSTM_SANITIZE"):
    # CI's sanitizer job: ASan + UBSan, frame pointers for readable reports.
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    extra_compile_args = ["-O1", "-g"] + sanitize
    extra_link_args = sanitize + ["-pthread"]


class BuildWithIsaFlags(build_ext):
    """build_ext that appends the per-file ISA flags when compiling each source."""

    def build_extensions(self):
        compile_one = self.compiler._compile

        def compile_with_isa_flags(obj, src, ext, cc_args, extra_postargs, pp_opts):
            flags = ISA_FLAGS.get(Path(src).name, [])
            return compile_one(obj, src, ext, cc_args, list(extra_postargs) + flags, pp_opts)

        self.compiler._compile = compile_with_isa_flags
        super().build_extensions()


setup(
    ext_modules=[
        Pybind11Extension(
            "fastlstm._core",
            sources,
            cxx_std=17,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            # setuptools does not scan includes: list the headers so editing one rebuilds.
            depends=sorted(str(p) for p in Path("csrc").rglob("*.h")),
        )
    ],
    cmdclass={"build_ext": BuildWithIsaFlags},
)
