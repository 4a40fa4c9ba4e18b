"""Which network addresses the downloader may connect to.

Only globally routable addresses are allowed by default: private, loopback, link-local
(which holds the cloud metadata endpoint 169.254.169.254), shared (CGNAT), multicast and
reserved ranges are refused, as are the known metadata hosts. The check runs on the address a
socket actually connected to, so it holds after DNS resolution, against DNS rebinding, and on
every redirect hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services that sit on otherwise routable or unusual addresses.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)

# IPv6 ranges that carry an IPv4 address in their low 32 bits and reach it through a translator.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64, IPv4-compatible), if any.

    Judging these by their IPv6 range alone would let ``2002:a00:1::`` or ``64:ff9b::a00:1``
    reach 10.0.0.1 through a 6to4 relay or a NAT64 gateway.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_WELL_KNOWN or (ip in IPV4_COMPATIBLE and not (ip.is_loopback or ip.is_unspecified)):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class BlockedAddressError(ConnectionError):
    """The downloader refused to talk to this address."""


@dataclass(frozen=True)
class AddressPolicy:
    """Allow global addresses, plus any network in ``allow`` (for example 127.0.0.0/8 in tests)."""

    allow: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_strings(cls, networks: Iterable[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` is refused, or None when it may be used."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address):
            ip = _embedded_ipv4(ip) or ip
        if any(ip in network for network in self.allow):
            return None
        if ip in METADATA_ADDRESSES:
            return f"{ip} is a cloud metadata address"
        if not ip.is_global or ip.is_multicast:
            kind = ("loopback" if ip.is_loopback else "link-local" if ip.is_link_local
                    else "private" if ip.is_private else "non-global")
            return f"{ip} is a {kind} address"
        return None

    def check(self, address: str) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise BlockedAddressError(reason)
