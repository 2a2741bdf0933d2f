"""Compiling the BPF objects: during `pip install` (setup.py) and on demand for editable installs.

The installed package carries `xdp/bpf/dsrlb.bpf.o` (and `floor.bpf.o`) next to the C sources, built
by setup.py's build_py hook. A checkout installed in editable mode has no object: `ensure_object()`
compiles it into a cache directory, under a name derived from the sources, so any edit rebuilds it.

This module only uses the standard library so that setup.py can load it before dsrlb is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

BPF_SOURCE_DIR = Path(__file__).resolve().parent / "bpf"
MAIN_PROGRAM = "dsrlb"  # dsrlb.bpf.c: the load-balancing XDP program
FLOOR_PROGRAM = "floor"  # floor.bpf.c: swap MACs and XDP_TX, the benchmark's floor


class BpfBuildError(RuntimeError):
    """The BPF object could not be built (no clang, or the compiler rejected the source)."""


def _asm_include_dir() -> Path:
    """Where <asm/types.h> lives for this machine (Debian: /usr/include/<multiarch>)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return Path("/usr/include") / str(multiarch)


def compiler() -> str:
    found = shutil.which(os.environ.get("DSRLB_CLANG", "clang"))
    if found is None:
        raise BpfBuildError("clang is not installed (Debian: apt-get install clang llvm libbpf-dev)")
    return found


def compile_command(source: Path, output: Path) -> list[str]:
    """clang flags: BPF target, -mcpu=v3 for atomic fetch-add (rr counters) and 32-bit jumps."""
    return [
        compiler(), "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86",
        "-Wall", "-Wno-unused-function", "-Werror",
        "-I", str(source.parent), "-I", str(_asm_include_dir()),
        "-c", str(source), "-o", str(output),
    ]


def compile_object(source: Path, output: Path) -> Path:
    """Compile `source` into `output` atomically (a concurrent reader never sees half an object)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=output.name + ".", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        done = subprocess.run(compile_command(source, tmp), capture_output=True, text=True)
        if done.returncode != 0:
            raise BpfBuildError(f"clang failed on {source.name}:\n{done.stderr.strip()}")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _newest_source_mtime(source_dir: Path) -> float:
    sources = [*source_dir.glob("*.c"), *source_dir.glob("*.h")]
    return max(p.stat().st_mtime for p in sources)


def _sources_digest(source_dir: Path) -> str:
    digest = hashlib.sha256(" ".join(compile_command(Path("x.c"), Path("x.o"))[1:]).encode())
    for path in sorted([*source_dir.glob("*.c"), *source_dir.glob("*.h")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """DSRLB_BPF_CACHE, else $XDG_CACHE_HOME/dsrlb/bpf, else ~/.cache/dsrlb/bpf."""
    explicit = os.environ.get("DSRLB_BPF_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dsrlb" / "bpf"


def ensure_object(program: str = MAIN_PROGRAM, source_dir: Path = BPF_SOURCE_DIR) -> Path:
    """Path of an up-to-date `<program>.bpf.o`: the packaged one, else a cached build.

    A packaged object is used when it is at least as new as every source next to it; otherwise (an
    editable checkout, or sources edited after install) the object is built in `cache_dir()`.
    """
    source = source_dir / f"{program}.bpf.c"
    if not source.exists():
        raise BpfBuildError(f"BPF source {source} is missing")
    newest = _newest_source_mtime(source_dir)
    packaged = source_dir / f"{program}.bpf.o"
    if packaged.exists() and packaged.stat().st_mtime >= newest:
        return packaged
    # Named by a digest of the sources and flags, so that two checkouts sharing one cache never use
    # each other's object, and an edited source always means a rebuild (mtime alone can lie).
    cached = cache_dir() / f"{program}-{_sources_digest(source_dir)}.bpf.o"
    if cached.exists():
        return cached
    return compile_object(source, cached)


def build_into(package_bpf_dir: Path, source_dir: Path = BPF_SOURCE_DIR) -> list[Path]:
    """Build every program into `package_bpf_dir` (setup.py: the build tree of the package)."""
    return [
        compile_object(source_dir / f"{name}.bpf.c", package_bpf_dir / f"{name}.bpf.o")
        for name in (MAIN_PROGRAM, FLOOR_PROGRAM)
    ]
