"""Loading, the BTF layout check, attach/detach on a veth in a namespace of our own, and pins."""

from __future__ import annotations

import ctypes
import shutil
import socket
from pathlib import Path

import pytest

from dsrlb.xdp import build, layout
from dsrlb.xdp.dataplane import XdpDataplane
from dsrlb.xdp.libbpf import BpfObject, LibbpfError, xdp_query_id
from netns import ScratchNamespace, ip

pytestmark = pytest.mark.root


class session_value(ctypes.Structure):
    """struct session_value with two members swapped: what a stale layout.py would look like."""

    _fields_ = [("target_id", ctypes.c_uint32), ("target_slot", ctypes.c_uint32),
                ("last_seen_ns", ctypes.c_uint64)]


class nat_key(ctypes.Structure):
    """struct nat_key with a member missing at the end."""

    _fields_ = [("target", layout.dsrlb_addr), ("client", layout.dsrlb_addr)]


def test_every_shared_struct_matches_btf() -> None:
    with BpfObject(build.ensure_object()) as obj:
        layout.check_layouts(obj)


def test_layout_mismatch_is_a_clear_error() -> None:
    with BpfObject(build.ensure_object()) as obj:
        with pytest.raises(layout.LayoutMismatch, match=r"struct session_value: member target_id .*offset 0"):
            layout.check_layout(obj, session_value)
        with pytest.raises(layout.LayoutMismatch, match=r"struct nat_key"):
            layout.check_layout(obj, nat_key)


def test_load_fails_clearly_when_the_object_has_another_layout(tmp_path: Path) -> None:
    """An object built from a maps.h whose session_value differs must not load into XdpDataplane."""
    sources = tmp_path / "bpf"
    shutil.copytree(build.BPF_SOURCE_DIR, sources, ignore=shutil.ignore_patterns("*.o"))
    maps_h = sources / "maps.h"
    text = maps_h.read_text()
    assert "__u32 target_slot; /* a hint" in text
    maps_h.write_text(text.replace("__u32 target_slot; /* a hint", "__u64 target_slot; /* a hint"))
    stale = build.compile_object(sources / "dsrlb.bpf.c", tmp_path / "stale.bpf.o")
    with pytest.raises(layout.LayoutMismatch, match="session_value"):
        XdpDataplane(object_path=stale)


def test_sources_edit_rebuilds_the_cached_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRLB_BPF_CACHE", str(tmp_path / "cache"))
    sources = tmp_path / "bpf"
    shutil.copytree(build.BPF_SOURCE_DIR, sources, ignore=shutil.ignore_patterns("*.o"))
    first = build.ensure_object("floor", sources)
    assert build.ensure_object("floor", sources) == first
    floor = sources / "floor.bpf.c"
    floor.write_text(floor.read_text() + "\n/* edited */\n")
    second = build.ensure_object("floor", sources)
    assert second != first and second.exists()


def test_verifier_rejection_carries_the_log(tmp_path: Path) -> None:
    source = tmp_path / "bad.bpf.c"
    source.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                      'SEC("xdp") int bad(struct xdp_md *ctx) {\n'
                      '  return *(char *)(long)ctx->data; /* no bounds check */\n}\n'
                      'char LICENSE[] SEC("license") = "GPL";\n')
    obj_path = build.compile_object(source, tmp_path / "bad.bpf.o")
    with BpfObject(obj_path) as obj, pytest.raises(LibbpfError) as caught:
        obj.load()
    assert caught.value.errno == 13  # EACCES: the verifier said no
    assert "invalid access to packet" in str(caught.value)


def test_attach_detach_on_a_veth_and_pins_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSRLB_BPF_DIR", str(Path("/sys/fs/bpf") / f"dsrlbtest-{tmp_path.name}"))
    namespace = ScratchNamespace(max_ifindex=2)
    try:
        ip("-n", namespace.name, "link", "set", "v2", "up")
        ip("-n", namespace.name, "link", "set", "v3", "up")
        with namespace.entered(), XdpDataplane(instance="xdptest") as dataplane:
            ifindex = socket.if_nametoindex("v2")
            attachment = dataplane.attach("v2")
            assert attachment.mode in ("native", "generic")
            assert xdp_query_id(ifindex) != 0
            pinned = dataplane.pin()
            assert (pinned / "sessions").exists() and (pinned / "dsrlb_xdp_prog").exists()
            dataplane.detach("v2")
            assert xdp_query_id(ifindex) == 0
            dataplane.unpin()
            assert not pinned.exists()
            dataplane.attach(ifindex, mode="generic")
            dataplane.pin()
        # close() detached and unpinned what was left
        with namespace.entered():
            assert xdp_query_id(socket.if_nametoindex("v2")) == 0
        assert not pinned.exists()
    finally:
        namespace.remove()
        shutil.rmtree(Path("/sys/fs/bpf") / f"dsrlbtest-{tmp_path.name}", ignore_errors=True)
