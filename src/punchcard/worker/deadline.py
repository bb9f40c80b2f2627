"""A whole-request deadline for webhook POSTs.

httpx's timeouts bound each connect, read and write, not a request: a receiver that sends
its answer a byte every few seconds never trips one, and holds a sender for as long as it
likes. The network backend here gives every socket operation only what is left of the
deadline the sending thread set (`within`), so a request ends when its time is up. The
name look-up too: `getaddrinfo` takes no timeout, and a DNS server that never answers
would hold the sender for as long as the system's resolver keeps asking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as LookupTimeout
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from punchcard.services.addresses import Resolver, resolve

_local = threading.local()
# Name look-ups in progress: one per name at a time, each on a thread of its own, so that a
# sender waits for one no longer than its time left, and a name whose DNS never answers holds
# one thread (until the system resolver gives up), never the look-ups of other names.
_asking: dict[tuple[Resolver, str, int], Future[Sequence[str]]] = {}
_asking_lock = threading.Lock()


def _ask(resolver: Resolver, host: str, port: int) -> Future[Sequence[str]]:
    key = (resolver, host, port)
    with _asking_lock:
        found = _asking.get(key)
        if found is not None:
            return found  # the same name asked already: share its answer
        asked: Future[Sequence[str]] = Future()
        _asking[key] = asked

    def look_up() -> None:
        try:
            asked.set_result(resolver(host, port))
        except BaseException as exc:  # handed to every waiter
            asked.set_exception(exc)
        finally:
            with _asking_lock:
                del _asking[key]

    threading.Thread(target=look_up, name="punchcard-dns", daemon=True).start()
    return asked


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Give the requests this thread makes inside the block `seconds` in all."""
    _local.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.at = None


def time_left(timeout: float | None, late: type[Exception]) -> float | None:
    """`timeout`, or less: what is left of this thread's deadline (`late` when none is)."""
    at: float | None = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise late("the request's time is up")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = time_left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


def _anywhere(_address: str) -> bool:
    return True


class Resolving(httpcore.SyncBackend):
    """A network backend that resolves a name once, within the sending thread's deadline,
    refuses it if `admit` refuses any of its addresses, and connects to those same addresses
    in turn, each with what is left of the time (as `socket.create_connection` would)."""

    def __init__(self, resolver: Resolver = resolve, admit: Callable[[str], bool] = _anywhere):
        self.resolver = resolver
        self.admit = admit

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        found = self._lookup(host, port, timeout)
        refused = [address for address in found if not self.admit(address)]
        if refused or not found:
            raise httpcore.ConnectError(
                f"refused: {host} resolves to {', '.join(refused) or 'nothing'}"
            )
        error: Exception | None = None
        for address in found:
            try:
                left = time_left(timeout, httpcore.ConnectTimeout)
                return super().connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def _lookup(self, host: str, port: int, timeout: float | None) -> Sequence[str]:
        asked = _ask(self.resolver, host, port)
        try:
            return asked.result(time_left(timeout, httpcore.ConnectTimeout))
        except LookupTimeout as exc:
            raise httpcore.ConnectTimeout(f"{host} did not resolve in time") from exc
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc


class Deadlined(httpcore.NetworkBackend):
    """A network backend whose streams keep to the sending thread's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        left = time_left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.connect_tcp(host, port, left, local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class Transport(httpx.HTTPTransport):
    """httpx's own transport, its connection pool given a network backend (kept to the
    deadline). httpx 0.28 takes no backend, so the pool it built is replaced with one made
    the same way (the client's defaults), plus the backend."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=Deadlined(backend or Resolving()),
        )
