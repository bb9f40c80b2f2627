"""Live webhooks connect only to public addresses, checked at the moment of connecting.

Checking a URL's host and then letting the HTTP client resolve it again leaves a gap: a
name can resolve to a public address for the check and to a private one for the
connection (DNS rebinding). Here the name is resolved once, every address it gives is
checked, and the socket is opened to one of those same addresses. TLS still verifies the
certificate against the URL's host name, and the pool keys connections by that name.
"""

from __future__ import annotations

from collections.abc import Callable

from punchcard.services.addresses import Resolver, is_public, resolve
from punchcard.worker.deadline import Resolving, Transport


class PublicOnly(Resolving):
    """A network backend that opens TCP connections to checked public addresses only."""

    def __init__(
        self, resolver: Resolver = resolve, admit: Callable[[str], bool] = is_public
    ) -> None:
        super().__init__(resolver, admit)


class PublicOnlyTransport(Transport):
    """The webhook transport (see `deadline`) with the checking backend."""

    def __init__(self, backend: Resolving | None = None) -> None:
        super().__init__(backend or PublicOnly())
