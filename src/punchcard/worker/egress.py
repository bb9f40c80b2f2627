"""Live webhooks connect only to public addresses, checked at the moment of connecting.

Checking a URL's host and then letting the HTTP client resolve it again leaves a gap: a
name can resolve to a public address for the check and to a private one for the
connection (DNS rebinding). Here the name is resolved once, every address it gives is
checked, and the socket is opened to one of those same addresses. TLS still verifies the
certificate against the URL's host name, and the pool keys connections by that name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpcore

from punchcard.services.addresses import Resolver, is_public, resolve
from punchcard.worker.deadline import Transport, time_left


class PublicOnly(httpcore.SyncBackend):
    """A network backend that opens TCP connections to checked addresses only."""

    def __init__(
        self, resolver: Resolver = resolve, admit: Callable[[str], bool] = is_public
    ) -> None:
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
        try:
            found = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        refused = [address for address in found if not self.admit(address)]
        if refused or not found:
            raise httpcore.ConnectError(
                f"refused: {host} resolves to {', '.join(refused) or 'nothing'}"
            )
        error: Exception | None = None
        for address in found:  # as `socket.create_connection` does: each address in turn
            try:  # each with what is left of the request's time, not all of it again
                left = time_left(timeout, httpcore.ConnectTimeout)
                return super().connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


class PublicOnlyTransport(Transport):
    """The webhook transport (see `deadline`) with the checking backend."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        super().__init__(backend or PublicOnly())
