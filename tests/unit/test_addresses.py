"""Which addresses a live webhook may reach, however an IPv4 address is dressed in IPv6."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punchcard.services.addresses import is_public

EMBEDDINGS = {
    "mapped": lambda v4: ipaddress.IPv6Address((0xFFFF << 32) | v4),
    "NAT64": lambda v4: ipaddress.IPv6Address((0x64FF9B << 96) | v4),
    "6to4": lambda v4: ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80) | 1),
    "SIIT": lambda v4: ipaddress.IPv6Address((0xFFFF << 48) | v4),
    "compatible": lambda v4: ipaddress.IPv6Address(v4),
}


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),  # shared (carrier-grade NAT)
        ("169.254.169.254", False),  # cloud metadata
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::7f00:1", False),  # NAT64 to 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 to 169.254.169.254
        ("64:ff9b::808:808", True),  # NAT64 to 8.8.8.8
        ("64:ff9b:1::a00:1", False),  # a network's own NAT64 prefix: its target is unknown
        ("2002:a00:1::1", False),  # 6to4 through 10.0.0.1
        ("2002:808:808::1", True),
        ("::127.0.0.1", False),
        ("::ffff:0:a00:1", False),  # SIIT to 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_an_address_is_public_only_if_what_it_reaches_is(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize("form", sorted(EMBEDDINGS))
@given(v4=st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_carried_in_ipv6_is_judged_as_itself(form: str, v4: int) -> None:
    carried = EMBEDDINGS[form](v4)
    assert is_public(str(carried)) is is_public(str(ipaddress.IPv4Address(v4))), carried
