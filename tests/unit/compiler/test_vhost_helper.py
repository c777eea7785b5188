"""The forked helper that builds part of the outbound virtual hosts: the same bundle with or without it, whatever
the helper does, and no process left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from benchmarks.generate import Sizes, generate
from dpumesh.compiler import MeshSettings, compile_node, vhost_helper
from dpumesh.compiler.outbound import OutboundBuilder
from dpumesh.errors import DpumeshError
from dpumesh.state import build_state, load_state

STATES = Path(__file__).parent / "states"
# Enough hosts for several chunks on each side; namespaces with Sidecar scopes, subsets and policies.
SIZES = Sizes(services=400, pods=600, nodes=3, virtual_services=120, destination_rules=120, namespaces=8, seed=5)


def _generated():
    return build_state([d for data in generate(SIZES).values() for d in yaml.safe_load_all(data) if d])


def _children() -> set[int]:
    """This process's child processes (the helper is one while it lives)."""
    pid = os.getpid()
    return set(map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()))


def _compile_all(state, parallel: bool | None) -> dict:
    """Every node's files and warnings, compiled in one process (the first node builds what later ones reuse)."""
    out = {}
    for node in sorted(state.nodes):
        bundle = compile_node(state, MeshSettings(), node, parallel=parallel)
        out[node] = (bundle.files, [str(w) for w in bundle.warnings])
    return out


@pytest.fixture(scope="module")
def alone() -> dict:
    return _compile_all(_generated(), parallel=False)


def test_the_helper_builds_its_share_and_the_bundle_is_the_same(alone, monkeypatch):
    monkeypatch.setattr(vhost_helper, "CHUNK", 40)  # several chunks
    before = _children()
    state = _generated()
    first = compile_node(state, MeshSettings(), "node-1", parallel=True)
    assert first.helper_vhosts > 200, "the helper built its share and the compiler took it"
    assert (first.files, [str(w) for w in first.warnings]) == alone["node-1"]
    assert _compile_all(state, parallel=True) == alone
    assert _children() == before, "the helper is reaped"


def test_the_helper_really_built_them(monkeypatch):
    """Virtual hosts the compiler took from the helper are not built again by the compiler."""
    built_here = []
    real = OutboundBuilder.host_vhost

    def recorded(self, port, host, *rest, **kw):
        if os.getpid() == parent:
            built_here.append((port, host.fqdn))
        return real(self, port, host, *rest, **kw)

    parent = os.getpid()
    monkeypatch.setattr(OutboundBuilder, "host_vhost", recorded)
    state = _generated()
    compile_node(state, MeshSettings(), "node-1", parallel=False)
    total = len(built_here)
    built_here.clear()
    compile_node(_generated(), MeshSettings(), "node-1", parallel=True)
    assert 0 < len(built_here) < total * (vhost_helper.PARENT_SHARE + 0.1), (len(built_here), total)


@pytest.mark.parametrize("failure", ["raises", "dies", "wrong-hosts"])
def test_whatever_the_helper_does_the_bundle_is_the_same(alone, monkeypatch, failure):
    real = OutboundBuilder.helper_vhosts

    def broken(self, start):
        for n, vhost in enumerate(real(self, start)):
            if n == 50:
                if failure == "raises":
                    raise RuntimeError("helper bug")
                if failure == "dies":
                    os._exit(3)
            if failure == "wrong-hosts" and n >= 60:
                vhost = vhost_helper.BuiltVhost((vhost.key[0], "elsewhere"), vhost.json, vhost.described, vhost.trace)
            yield vhost

    monkeypatch.setattr(vhost_helper, "CHUNK", 40)
    monkeypatch.setattr(OutboundBuilder, "helper_vhosts", broken)
    before = _children()
    assert _compile_all(_generated(), parallel=True) == alone
    assert _children() == before


def test_an_error_while_compiling_stops_the_helper(monkeypatch):
    import dpumesh.compiler as compiler

    def failing(ctx):
        raise DpumeshError("inbound side failed")

    monkeypatch.setattr(compiler, "build_inbound", failing)
    before = _children()
    with pytest.raises(DpumeshError, match="inbound side failed"):
        compile_node(_generated(), MeshSettings(), "node-1", parallel=True)
    assert _children() == before


def test_only_a_first_compile_of_enough_hosts_forks(monkeypatch):
    forks = []
    real = vhost_helper.VhostHelper.__init__

    def counted(self, *args):
        forks.append(args[0])
        real(self, *args)

    monkeypatch.setattr(vhost_helper.VhostHelper, "__init__", counted)
    compile_node(load_state(STATES / "features"), MeshSettings(), "node-1")  # by default: too few hosts
    assert forks == []
    state = _generated()
    for node in sorted(state.nodes):
        compile_node(state, MeshSettings(), node, parallel=True)
    assert len(forks) == 1, "later nodes reuse the first node's outbound chains: nothing to build"


def test_when_a_helper_is_wanted(monkeypatch):
    monkeypatch.delenv(vhost_helper.DISABLE_ENV, raising=False)
    many = vhost_helper.MIN_VHOSTS
    assert vhost_helper.wanted(many, None) == (len(os.sched_getaffinity(0)) >= 2)
    assert not vhost_helper.wanted(many - 1, None)
    assert not vhost_helper.wanted(many, False)
    assert vhost_helper.wanted(2, True)
    monkeypatch.setenv(vhost_helper.DISABLE_ENV, "0")
    assert not vhost_helper.wanted(many, None)


@pytest.mark.parametrize("name", ["basic", "features"])
def test_hand_written_states_are_the_same_with_a_helper(name, monkeypatch):
    """States with contested names, sourceLabels, Sidecar scopes, exportTo, several VirtualServices per host."""
    monkeypatch.setattr(vhost_helper, "PARENT_SHARE", 0.3)
    monkeypatch.setattr(vhost_helper, "CHUNK", 2)
    forks = []
    real = vhost_helper.VhostHelper.__init__
    monkeypatch.setattr(vhost_helper.VhostHelper, "__init__", lambda self, *a: forks.append(a) or real(self, *a))
    alone = _compile_all(load_state(STATES / name), parallel=False)
    assert _compile_all(load_state(STATES / name), parallel=True) == alone
    assert forks
