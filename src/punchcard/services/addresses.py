"""Which network addresses a live webhook may reach: public ones only.

An IPv6 address can carry an IPv4 address inside it, and a network that translates
between the two delivers to that IPv4 address. So each such form is judged by the
IPv4 address it carries, not by the IPv6 range it sits in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# IPv6 ranges whose last 32 bits are an IPv4 address that a translator will reach.
_CARRYING_IPV4_IN_LAST_32_BITS = (
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    ipaddress.ip_network("::ffff:0:0:0/96"),  # SIIT, IPv4-translated (RFC 2765)
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated, RFC 4291)
)
# NAT64 prefixes a network picks for itself: the IPv4 address may sit anywhere in them.
_LOCAL_TRANSLATION = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215


def carried_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, SIIT, compatible)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _CARRYING_IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(text: str) -> bool:
    """True for a globally routable unicast address, judged by any IPv4 address it carries."""
    address = ipaddress.ip_address(text.split("%")[0])  # a scope id (`fe80::1%eth0`) aside
    if isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_TRANSLATION:
        return False
    inner = carried_ipv4(address)
    if inner is not None:
        address = inner
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, each once."""
    infos: list[Any] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
