"""A forked helper process that builds outbound HTTP virtual hosts of a first compile alongside the compiler.

The first compile of a large state spends most of its time on the outbound HTTP virtual hosts: thousands of
hosts, each with its routes and clusters. They are independent of each other. The helper, a fork of the
compiling process made once the classes are known, builds them from the last one down, while the compiler
builds its node's inbound side and steering, then the virtual hosts from the first one up. Each side tells
the other, through a few shared bytes, how far it got; they meet wherever the work splits evenly, whatever
the machine's load, with no share to tune.

For each virtual host the helper sends what the compiler would have made of it: the encoded JSON, its
describe lines, and the trace of what building it did (clusters used, parity notes, problems found). The
compiler replays each trace where it would have built the virtual host, so the bundle is byte for byte the
bundle of a compile without a helper. The helper sends its virtual hosts in chunks as it builds them, each
written to an anonymous memory file with its place sent through a pipe; the compiler reads them while it
builds its own.

Whatever goes wrong in the helper (it fails, dies, or sees other virtual hosts than the compiler), the compiler
builds the missing virtual hosts itself: the helper only ever saves time. Where both build the same virtual
host (they cross at the same moment), the compiler keeps its own.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import pickle
import select
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

# Fewer virtual hosts than this are built faster than a fork, a transfer and a replay cost.
MIN_VHOSTS = 1500
CHUNK = 100  # virtual hosts per chunk: small enough that the last one arrives soon after the sides meet
STALL_SECONDS = 30.0  # a chunk takes milliseconds: a helper this late is stuck
DISABLE_ENV = "DPUMESH_COMPILE_HELPER"  # "0": never fork a helper
NOT_STARTED = 0xFFFFFFFF
# Shared progress: at 0 the compiler's next virtual host, at 4 the lowest one the helper built. Each side writes
# its own field only.
_FIELD = struct.Struct("=I")
COMPILER_NEXT, HELPER_LOWEST = 0, 4


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

    def class_names(self) -> list[str]: ...

    def planned_vhosts(self) -> list[Any]: ...

    def traced_vhost(self, planned: Any) -> BuiltVhost: ...

    def encoded_cluster(self, name: str) -> tuple[bytes, str] | None: ...


def wanted(vhost_count: int, parallel: bool | None) -> bool:
    """Whether to fork a helper: asked for (`parallel`), or by default for a large first compile on a machine
    with a second CPU, in a process with no other thread (a fork copies only the calling thread)."""
    if vhost_count < 2 or parallel is False or not hasattr(os, "memfd_create") or threading.active_count() > 1:
        return False
    if parallel:
        return True
    return os.environ.get(DISABLE_ENV, "") != "0" and vhost_count >= MIN_VHOSTS and _cpus() >= 2


def _cpus() -> float:
    """The CPUs this process may use: its affinity, and its cgroup's quota when it has one (a container)."""
    cpus: float = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    return cpus


class VhostHelper:
    """The compiler's handle on the helper process."""

    def __init__(self, source: Callable[[], VhostSource]):
        self.taken = 0  # virtual hosts the compiler took from the helper
        self._vhosts: dict[int, BuiltVhost] = {}
        self._clusters: dict[str, tuple[bytes, str]] = {}
        self._met: int | None = None  # the first virtual host the compiler takes from the helper
        self._classes: list[str] | None = None  # the classes the compiler builds for (`expect`)
        self._failed = False
        self._ended = False  # the helper sent its last chunk
        self._pending = b""  # a place line not read in full yet
        self._pid = 0
        self._places: int | None = None
        self._memory: int | None = None
        self._progress = mmap.mmap(-1, 2 * _FIELD.size)  # anonymous and shared: the fork maps it in both
        _FIELD.pack_into(self._progress, COMPILER_NEXT, 0)
        _FIELD.pack_into(self._progress, HELPER_LOWEST, NOT_STARTED)
        try:
            self._memory = os.memfd_create("dpumesh-vhost-helper")
            self._places, write_end = os.pipe()
            try:
                self._pid = os.fork()
                if self._pid == 0:  # the helper
                    os.close(self._places)
                    _run_helper(self._memory, write_end, self._progress, source)
            finally:
                os.close(write_end)
            os.set_blocking(self._places, False)
        except OSError:
            self.close()  # no fork (process or memory limits): the caller compiles alone
            raise

    def expect(self, classes: list[str]) -> None:
        """The classes the compiler builds its virtual hosts for: the helper's must be the same."""
        self._classes = classes

    def get(self, index: int, key: tuple[int, str]) -> BuiltVhost | None:
        """The helper's virtual host number `index` (as the compiler numbers them, from 0 up), if the sides have
        met there and the helper built it as `key`; None: build it yourself."""
        if self._failed:
            return None
        if self._met is None:
            (lowest,) = _FIELD.unpack_from(self._progress, HELPER_LOWEST)
            if lowest > index:  # the helper has not come down this far: build it here, and say so
                _FIELD.pack_into(self._progress, COMPILER_NEXT, index + 1)
                if index % 16 == 0:
                    self._receive(wait=False)  # read what already came, while there is other work
                return None
            self._met = index
        while index not in self._vhosts:
            if self._ended or not self._receive(wait=True):
                self._failed = True
                return None
        vhost = self._vhosts[index]
        if vhost.key != key:
            self._failed = True  # it saw other virtual hosts: trust none from here on
            return None
        self.taken += 1
        return vhost

    def cluster(self, name: str) -> tuple[bytes, str] | None:
        return self._clusters.get(name)

    def _receive(self, wait: bool) -> bool:
        """Read the chunks the helper has sent (`wait`: at least one); False when it sends no more."""
        read_any = False
        while self._places is not None:
            try:
                data = os.read(self._places, 4096)
            except BlockingIOError:
                if read_any or not wait:
                    return True
                if not select.select([self._places], [], [], STALL_SECONDS)[0]:
                    return False  # a helper that stalls: build the rest locally rather than wait on it
                continue
            if not data:  # the helper closed its end: it ended, failed or died
                self._ended = True
                return read_any
            *lines, self._pending = (self._pending + data).split(b"\n")
            for line in lines:
                if not self._read_chunk(line):
                    self._ended = True
                    return False
                read_any = True
        return False

    def _read_chunk(self, line: bytes) -> bool:
        try:
            offset, size = map(int, line.split())
            classes, vhosts = _decode(os.pread(self._memory, size, offset), self._clusters)
        except Exception:  # a chunk that does not read back: build the rest locally
            return False
        if classes != self._classes:
            return False  # built for other classes (it found them before the checks): not this compile's
        self._vhosts.update(vhosts)
        return True

    def close(self) -> None:
        """Stop the helper if it still runs, reap it, and free what it shared."""
        try:
            if self._pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):  # reaped already by a SIGCHLD handler of the caller
                    os.waitpid(self._pid, 0)
                self._pid = 0
        finally:
            for fd in (self._places, self._memory):
                if fd is not None:
                    os.close(fd)
            self._places = self._memory = None
            self._progress.close()


def _encode(
    out: io.BufferedWriter,
    classes: list[str],
    chunk: list[tuple[int, BuiltVhost]],
    clusters: dict[str, tuple[bytes, str]],
) -> int:
    """The chunk's JSON as one run of bytes, then the rest pickled with the JSON's lengths (the bulk is not
    copied through pickle); returns its size."""
    index = (
        classes,
        [(i, v.key, len(v.json), v.described, v.trace) for i, v in chunk],
        [(name, len(encoded), line) for name, (encoded, line) in clusters.items()],
    )
    index_at = 0
    for piece in [*(v.json for _, v in chunk), *(encoded for encoded, _ in clusters.values())]:
        index_at += out.write(piece)
    size = index_at + out.write(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    return size + out.write(index_at.to_bytes(8, "little"))


def _decode(chunk: bytes, clusters: dict[str, tuple[bytes, str]]) -> tuple[list[str], dict[int, BuiltVhost]]:
    data = memoryview(chunk)
    index_at = int.from_bytes(data[-8:], "little")
    classes, vhost_index, cluster_index = pickle.loads(data[index_at:-8])
    at, vhosts = 0, {}
    for i, key, size, described, trace in vhost_index:
        vhosts[i] = BuiltVhost(key, bytes(data[at : at + size]), described, trace)
        at += size
    for name, size, line in cluster_index:
        clusters[name] = (bytes(data[at : at + size]), line)
        at += size
    return classes, vhosts


def _run_helper(memory: int, places: int, progress: mmap.mmap, source: Callable[[], VhostSource]) -> None:
    """The helper's whole life: build from the last virtual host down until it meets the compiler, sending
    chunk by chunk, then exit without the compiler's exit handlers."""
    code = 1
    try:
        builder = source()
        classes = builder.class_names()
        planned = builder.planned_vhosts()
        sent: set[str] = set()
        offset = 0
        with open(memory, "wb", closefd=False, buffering=1 << 20) as out:
            for chunk in _down_to_compiler(builder, planned, progress):
                names = [name for _, v in chunk for use in v.trace.uses for name in use[0] if name not in sent]
                clusters = {name: found for name in names if (found := builder.encoded_cluster(name))}
                sent.update(names)
                size = _encode(out, classes, chunk, clusters)
                out.flush()
                os.write(places, f"{offset} {size}\n".encode())
                offset += size
        code = 0
    except BaseException:  # the compiler builds whatever the helper did not send
        pass
    finally:
        os._exit(code)


def _down_to_compiler(builder: VhostSource, planned: list[Any], progress: mmap.mmap) -> Iterator[list]:
    """Chunks of (number, virtual host), from the last down, while the compiler has not built that far up."""
    chunk: list[tuple[int, BuiltVhost]] = []
    for index in range(len(planned) - 1, -1, -1):
        (compiler_next,) = _FIELD.unpack_from(progress, COMPILER_NEXT)
        if index < compiler_next:
            break
        chunk.append((index, builder.traced_vhost(planned[index])))
        _FIELD.pack_into(progress, HELPER_LOWEST, index)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
