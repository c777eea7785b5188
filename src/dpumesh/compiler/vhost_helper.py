"""A forked helper process that builds the last share of the outbound HTTP virtual hosts of a first compile.

The first compile of a large state spends most of its time on the outbound HTTP virtual hosts: thousands of
hosts, each with its routes and clusters. They are independent of each other, so the helper, a fork of the
compiling process made once the classes are known, builds the virtual hosts from `start` on while the
compiler goes on with the node's inbound side, steering and its own share. For each virtual host it sends
what the compiler would have made of it: the encoded JSON, its describe lines, and the trace of what building
it did (clusters used, parity notes, problems found). The compiler replays each trace where it would have
built the virtual host, so the bundle is byte for byte the bundle of a compile without a helper.

The helper sends its virtual hosts in chunks, as it builds them: the compiler takes each chunk while the
helper builds the next. A chunk is written to an anonymous memory file, and its place to a pipe, so tens of
megabytes do not go through the pipe.

Whatever goes wrong in the helper (it fails, dies, or sees other virtual hosts than the compiler), the compiler
builds the missing virtual hosts itself: the helper only ever saves time.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

# Share of the virtual hosts the compiler builds itself: it also builds the inbound side and the steering,
# and replays the helper's (measured on the full-size benchmark state: both then finish at about the same time).
PARENT_SHARE = 0.4
# Fewer virtual hosts than this are built faster than a fork, a transfer and a replay cost.
MIN_VHOSTS = 1500
CHUNK = 250  # virtual hosts per chunk
DISABLE_ENV = "DPUMESH_COMPILE_HELPER"  # "0": never fork a helper


class Trace(NamedTuple):
    """What building one virtual host did besides returning it, in the order it did it."""

    uses: tuple[tuple[tuple[str, ...], frozenset[str] | None, tuple[tuple[str, str], ...]], ...]
    errors: tuple[Any, ...]
    warnings: tuple[Any, ...]


class BuiltVhost(NamedTuple):  # tuples: thousands are made and read back per compile
    key: tuple[int, str]  # (port, host): the compiler checks it is the virtual host it expects
    json: bytes
    described: str  # its describe lines, joined
    trace: Trace


class VhostSource(Protocol):
    """What the helper builds with (the outbound builder)."""

    def helper_vhosts(self, start: int) -> Iterator[BuiltVhost]: ...

    def encoded_cluster(self, name: str) -> tuple[bytes, str] | None: ...


def wanted(vhost_count: int, parallel: bool | None) -> bool:
    """Whether to fork a helper: asked for (`parallel`), or by default for a large first compile on a machine
    with a second CPU, in a process with no other thread (a fork copies only the calling thread)."""
    if vhost_count < 2 or parallel is False or not hasattr(os, "memfd_create") or threading.active_count() > 1:
        return False
    if parallel:
        return True
    return os.environ.get(DISABLE_ENV, "") != "0" and vhost_count >= MIN_VHOSTS and len(os.sched_getaffinity(0)) >= 2


class VhostHelper:
    """The compiler's handle on the helper process."""

    def __init__(self, start: int, source: Callable[[], VhostSource]):
        self.start = start
        self._vhosts: list[BuiltVhost] = []
        self._clusters: dict[str, tuple[bytes, str]] = {}
        self._failed = False
        self.taken = 0  # virtual hosts the compiler took from the helper
        self._memory = os.memfd_create("dpumesh-vhost-helper")
        read_end, write_end = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the helper
            os.close(read_end)
            _run_helper(self._memory, write_end, source, start)
        os.close(write_end)
        self._places: io.BufferedReader | None = os.fdopen(read_end, "rb")

    def get(self, index: int, key: tuple[int, str]) -> BuiltVhost | None:
        """The helper's virtual host number `index` if it built it as `key`; None: build it yourself."""
        if self._failed or index < self.start:
            return None
        position = index - self.start
        while position >= len(self._vhosts):
            if not self._receive():
                self._failed = True
                return None
        if self._vhosts[position].key != key:
            self._failed = True  # it saw other virtual hosts: trust none from here on
            return None
        self.taken += 1
        return self._vhosts[position]

    def cluster(self, name: str) -> tuple[bytes, str] | None:
        return self._clusters.get(name)

    def _receive(self) -> bool:
        """Take the helper's next chunk; False when there is none (it ended, failed or died)."""
        line = self._places.readline() if self._places else b""
        try:
            offset, size = map(int, line.split())
            vhosts, clusters = _read_chunk(os.pread(self._memory, size, offset))
        except Exception:  # no chunk, or one that does not read back: build the rest locally
            return False
        self._vhosts += vhosts
        self._clusters.update(clusters)
        return bool(vhosts)

    def close(self) -> None:
        """Stop the helper if it still runs, reap it, and free its memory file."""
        if self._places is not None:
            self._places.close()
            self._places = None
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = 0
            os.close(self._memory)


def _write_chunk(out: io.BufferedWriter, vhosts: list[BuiltVhost], clusters: dict[str, tuple[bytes, str]]) -> int:
    """The chunk's JSON as one run of bytes, then the rest pickled with the JSON's lengths (the bulk is not
    copied through pickle); returns its size."""
    index = (
        [(v.key, len(v.json), v.described, v.trace) for v in vhosts],
        [(name, len(encoded), line) for name, (encoded, line) in clusters.items()],
    )
    index_at = 0
    for piece in [*(v.json for v in vhosts), *(encoded for encoded, _ in clusters.values())]:
        index_at += out.write(piece)
    size = index_at + out.write(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    return size + out.write(index_at.to_bytes(8, "little"))


def _read_chunk(chunk: bytes) -> tuple[list[BuiltVhost], dict[str, tuple[bytes, str]]]:
    data = memoryview(chunk)
    index_at = int.from_bytes(data[-8:], "little")
    vhost_index, cluster_index = pickle.loads(data[index_at:-8])
    at, vhosts, clusters = 0, [], {}
    for key, size, described, trace in vhost_index:
        vhosts.append(BuiltVhost(key, bytes(data[at : at + size]), described, trace))
        at += size
    for name, size, line in cluster_index:
        clusters[name] = (bytes(data[at : at + size]), line)
        at += size
    return vhosts, clusters


def _chunks(vhosts: Iterable[BuiltVhost]) -> Iterator[list[BuiltVhost]]:
    chunk: list[BuiltVhost] = []
    for vhost in vhosts:
        chunk.append(vhost)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_helper(memory: int, places: int, source: Callable[[], VhostSource], start: int) -> None:
    """The helper's whole life: build and send chunk by chunk, then exit without the compiler's exit handlers."""
    code = 1
    try:
        builder = source()
        sent: set[str] = set()
        offset = 0
        with open(memory, "wb", closefd=False, buffering=1 << 20) as out:
            for chunk in _chunks(builder.helper_vhosts(start)):
                names = [name for vhost in chunk for use in vhost.trace.uses for name in use[0] if name not in sent]
                clusters = {name: found for name in names if (found := builder.encoded_cluster(name))}
                sent.update(names)
                size = _write_chunk(out, chunk, clusters)
                out.flush()
                os.write(places, f"{offset} {size}\n".encode())
                offset += size
        code = 0
    except BaseException:  # the compiler builds whatever the helper did not send
        pass
    finally:
        os._exit(code)
