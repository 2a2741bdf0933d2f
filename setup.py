"""Build hook: compile the XDP programs into the package while it is built (`pip install .`).

Everything else about the package is in pyproject.toml. The BPF objects are placed next to their C
sources in the build tree (dsrlb/xdp/bpf/*.bpf.o), where dsrlb.xdp.build.ensure_object() finds them.
Without clang the package still installs (the AF_PACKET engine needs no BPF) and says so; editable
installs compile on first use into a cache instead (ensure_object()).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _load_bpf_build_module():  # type: ignore[no-untyped-def]
    """dsrlb/xdp/build.py by path: the package is not importable before it is installed."""
    path = HERE / "src" / "dsrlb" / "xdp" / "build.py"
    spec = importlib.util.spec_from_file_location("_dsrlb_bpf_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        super().run()
        bpf_build = _load_bpf_build_module()
        if shutil.which("clang") is None:
            print("warning: clang not found, the XDP objects are not built into the package; "
                  "dsrlb builds them on first use when clang is installed", file=sys.stderr)
            return
        target = Path(self.build_lib) / "dsrlb" / "xdp" / "bpf"
        for built in bpf_build.build_into(target, HERE / "src" / "dsrlb" / "xdp" / "bpf"):
            print(f"built {built}")


setup(cmdclass={"build_py": BuildPyWithBpf})
