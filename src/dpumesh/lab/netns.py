"""Reading inside a network namespace without starting a process.

A short-lived thread enters the namespace (setns(2) changes only the calling thread's network namespace) and
does the read there: /proc/thread-self/net shows that thread's namespace, and a socket belongs to the namespace
it was created in. The rest of the process stays where it was. `ip netns exec ... ss` or `... curl` costs two
process starts per read; the lab reads every pod's listening ports and every proxy's admin port on each apply.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from dpumesh.errors import DpumeshError

CLONE_NEWNET = 0x40000000
LISTEN = "0A"  # the TCP state column of /proc/net/tcp
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def run_in_netns(netns: str, read: Callable[[], T]) -> T:
    """read(), run in a thread inside the named network namespace (/run/netns/<netns>)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            _enter(netns)
            box["value"] = read()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns {netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _enter(netns: str) -> None:
    """Move the calling thread into the namespace."""
    try:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DpumeshError(f"network namespace {netns}: {exc.strerror}") from exc
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise DpumeshError(f"network namespace {netns}: setns: {os.strerror(error)}")
    finally:
        os.close(fd)


def listening_tcp_ports(netns: str) -> set[int]:
    """The TCP ports something listens on in the namespace (IPv4 and IPv6)."""

    def read() -> set[int]:
        ports = set()
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/thread-self/net/{table}", encoding="ascii") as listing:
                    lines = listing.read().splitlines()[1:]
            except FileNotFoundError:
                if table == "tcp6":  # no IPv6 in this kernel
                    continue
                raise DpumeshError(f"network namespace {netns}: /proc/thread-self/net/tcp is missing") from None
            for line in lines:
                fields = line.split()
                if len(fields) > 3 and fields[3] == LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    return run_in_netns(netns, read)


def http_get(netns: str, port: int, path: str, timeout: float = 2.0) -> str:
    """The body of GET http://127.0.0.1:<port><path> in the namespace; DpumeshError unless it answers 2xx."""

    def get() -> str:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            raise DpumeshError(f"GET 127.0.0.1:{port}{path} in {netns}: HTTP {response.status}")
        return body

    try:
        return run_in_netns(netns, get)
    except (OSError, http.client.HTTPException) as exc:
        raise DpumeshError(f"GET 127.0.0.1:{port}{path} in {netns}: {exc}") from exc
