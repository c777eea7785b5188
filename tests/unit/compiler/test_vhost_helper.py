"""The forked helper that builds outbound virtual hosts alongside the compiler: the same bundle with or without
it, whatever the helper does, and no process left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.generate import Sizes, generate
from dpumesh.compiler import MeshSettings, compile_node, vhost_helper
from dpumesh.compiler.outbound import OutboundBuilder
from dpumesh.errors import DpumeshError, InputError
from dpumesh.state import build_state, load_state

STATES = Path(__file__).parent / "states"
# Enough hosts for several chunks on each side; namespaces with Sidecar scopes, subsets and policies.
SIZES = Sizes(services=400, pods=600, nodes=3, virtual_services=120, destination_rules=120, namespaces=8, seed=5)
PARENT = os.getpid()


def _generated(extra: list[dict] | None = None):
    docs = [d for data in generate(SIZES).values() for d in yaml.safe_load_all(data) if d]
    return build_state(docs + (extra or []))


def _children() -> set[int]:
    """This process's child processes (the helper is one while it lives)."""
    return set(map(int, Path(f"/proc/{PARENT}/task/{PARENT}/children").read_text().split()))


def _compile_all(state, parallel: bool | None) -> dict:
    """Every node's files and warnings, compiled in one process (the first node builds what later ones reuse)."""
    out = {}
    for node in sorted(state.nodes):
        bundle = compile_node(state, MeshSettings(), node, parallel=parallel)
        out[node] = (bundle.files, [str(w) for w in bundle.warnings])
    return out


def _slow_compiler(monkeypatch, seconds: float = 0.5) -> None:
    """The compiler (not the helper) takes its time before its virtual hosts: the helper builds them all."""
    import dpumesh.compiler as compiler

    real = compiler.build_inbound

    def slow(ctx):
        if os.getpid() == PARENT:
            time.sleep(seconds)
        return real(ctx)

    monkeypatch.setattr(compiler, "build_inbound", slow)


@pytest.fixture(scope="module")
def alone() -> dict:
    return _compile_all(_generated(), parallel=False)


def test_with_a_helper_the_bundle_is_the_same(alone, monkeypatch):
    monkeypatch.setattr(vhost_helper, "CHUNK", 40)  # several chunks
    before = _children()
    state = _generated()
    first = compile_node(state, MeshSettings(), "node-1", parallel=True)
    assert (first.files, [str(w) for w in first.warnings]) == alone["node-1"]
    assert _compile_all(state, parallel=True) == alone
    assert _children() == before, "the helper is reaped"


def test_the_compiler_takes_what_the_helper_built(alone, monkeypatch):
    """While the compiler is busy elsewhere, the helper builds every virtual host; the compiler builds none."""
    built_here = []
    real = OutboundBuilder.host_vhost

    def recorded(self, port, host, *rest, **kw):
        if os.getpid() == PARENT:
            built_here.append((port, host.fqdn))
        return real(self, port, host, *rest, **kw)

    monkeypatch.setattr(OutboundBuilder, "host_vhost", recorded)
    _slow_compiler(monkeypatch)
    bundle = compile_node(_generated(), MeshSettings(), "node-1", parallel=True)
    assert bundle.helper_vhosts > 300
    assert len(built_here) < 20, "only the contested names' virtual hosts, built from their own plan"
    assert (bundle.files, [str(w) for w in bundle.warnings]) == alone["node-1"]


def test_both_sides_build_and_meet(alone, monkeypatch):
    """Without a head start, each side builds part: they meet in between, and nothing is missing or twice."""
    monkeypatch.setattr(vhost_helper, "CHUNK", 10)
    bundle = compile_node(_generated(), MeshSettings(), "node-1", parallel=True)
    assert (bundle.files, [str(w) for w in bundle.warnings]) == alone["node-1"]


@pytest.mark.parametrize("failure", ["raises", "dies", "wrong-hosts", "other-classes", "stalls"])
def test_whatever_the_helper_does_the_bundle_is_the_same(alone, monkeypatch, failure):
    real = OutboundBuilder.traced_vhost
    built = []

    def broken(self, planned):
        built.append(planned)
        if len(built) == 50:
            if failure == "raises":
                raise RuntimeError("helper bug")
            if failure == "dies":
                os._exit(3)
            if failure == "stalls":
                time.sleep(3600)
        vhost = real(self, planned)
        if failure == "wrong-hosts" and len(built) >= 60:
            vhost = vhost._replace(key=(vhost.key[0], "elsewhere"))
        return vhost

    monkeypatch.setattr(vhost_helper, "CHUNK", 20)
    monkeypatch.setattr(vhost_helper, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(OutboundBuilder, "traced_vhost", broken)
    if failure == "other-classes":
        monkeypatch.setattr(OutboundBuilder, "class_names", lambda self: ["not-a-class"])
    _slow_compiler(monkeypatch, 0.2)
    before = _children()
    assert _compile_all(_generated(), parallel=True) == alone
    assert _children() == before


def test_without_a_fork_the_compiler_builds_alone(alone, monkeypatch):
    """A process or memory limit that refuses the fork: the same bundle, built alone, and nothing left open."""

    def refused():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(vhost_helper.os, "fork", refused)
    fds = set(os.listdir("/proc/self/fd"))
    bundle = compile_node(_generated(), MeshSettings(), "node-1", parallel=True)
    assert bundle.helper_vhosts == 0
    assert (bundle.files, [str(w) for w in bundle.warnings]) == alone["node-1"]
    assert set(os.listdir("/proc/self/fd")) == fds


def test_an_invalid_state_is_reported_and_the_helper_stopped():
    """The helper starts before the state's checks; their findings are reported as without it."""
    bad = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "bad", "namespace": "team-000"},
        "spec": {"hosts": "not-a-list"},
    }
    before = _children()
    with pytest.raises(InputError, match=r"VirtualService team-000/bad: spec\.hosts"):
        compile_node(_generated([bad]), MeshSettings(), "node-1", parallel=True)
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
        forks.append(args)
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
    assert vhost_helper.wanted(many, None) == (vhost_helper._cpus() >= 2)
    assert not vhost_helper.wanted(many - 1, None)
    assert not vhost_helper.wanted(many, False)
    assert vhost_helper.wanted(2, True)
    monkeypatch.setenv(vhost_helper.DISABLE_ENV, "0")
    assert not vhost_helper.wanted(many, None)


@pytest.mark.parametrize("name", ["basic", "features"])
def test_hand_written_states_are_the_same_with_a_helper(name, monkeypatch):
    """States with contested names, sourceLabels, Sidecar scopes, exportTo, several VirtualServices per host."""
    monkeypatch.setattr(vhost_helper, "CHUNK", 2)
    forks = []
    real = vhost_helper.VhostHelper.__init__
    monkeypatch.setattr(vhost_helper.VhostHelper, "__init__", lambda self, *a: forks.append(a) or real(self, *a))
    alone = _compile_all(load_state(STATES / name), parallel=False)
    _slow_compiler(monkeypatch, 0.2)
    assert _compile_all(load_state(STATES / name), parallel=True) == alone
    assert forks
