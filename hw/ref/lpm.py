# Ref: RFC 4632 §5.1 (longest-match routing), RFC 4291 §2.3 (IPv6 prefixes),
#      RFC 1812 §5.2.4.3 (next-hop choice by longest matching prefix)
"""Golden reference of longest-prefix matching (IPv4 and IPv6 routing tables).

A table holds prefixes ``address/length`` of either IP version, each with a value (a next
hop, an action, ...). A lookup of an address returns the value of the longest prefix of the
same version that holds it, or ``None`` when no prefix does. A prefix given twice keeps its
last value. This is the meaning every LPM structure in nicsim (DIR-24-8 on the GPU, the IPv6
search structure, a match-action LPM key) is checked against; it is written for clarity, one
dictionary per prefix length, not for speed.
"""

from __future__ import annotations

import ipaddress

__all__ = ["LpmTable", "parse_prefix"]


def parse_prefix(prefix) -> tuple[int, int, int]:
    """Read a prefix: ``"10.0.0.0/8"``, ``"2001:db8::/32"`` or an ``ip_network``.

    Host bits must be zero (``"10.0.0.1/8"`` is refused, as a routing table would).

    Returns
    -------
    tuple of int
        ``(version, network address as an integer, length)``.

    Raises
    ------
    ValueError
        One sentence naming the prefix when it is not an IPv4 or IPv6 prefix.
    """
    try:
        net = prefix if isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network) \
            else ipaddress.ip_network(prefix)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"route prefix {prefix!r} is not an IP prefix ({exc})") from None
    return net.version, int(net.network_address), net.prefixlen


class LpmTable:
    """A longest-prefix-match table over IPv4 and IPv6 prefixes.

    Parameters
    ----------
    routes : iterable of (prefix, value)
        Prefixes as :func:`parse_prefix` reads them, with any value.

    Members
    -------
    prefixes : dict
        ``{(version, network, length): value}``, the table as given.
    """

    _BITS = {4: 32, 6: 128}

    def __init__(self, routes=()):
        self.prefixes = {}
        self._by_length = {4: {}, 6: {}}
        for prefix, value in routes:
            self.add(prefix, value)

    def add(self, prefix, value) -> None:
        """Add (or replace) one prefix."""
        version, network, length = parse_prefix(prefix)
        self.prefixes[(version, network, length)] = value
        bits = self._BITS[version]
        self._by_length[version].setdefault(length, {})[network >> (bits - length)] = value

    def lengths(self, version: int) -> list[int]:
        """Return the prefix lengths present for an IP version, shortest first."""
        return sorted(self._by_length[version])

    def lookup(self, address, version: int | None = None):
        """Return the value of the longest prefix holding ``address``, or ``None``.

        Parameters
        ----------
        address : int, str or ipaddress.IPv4Address / IPv6Address
            An integer needs ``version``; other forms carry their own.
        version : int, optional
            4 or 6, for an integer address.
        """
        if isinstance(address, int):
            if version not in self._BITS:
                raise ValueError(f"an integer address needs version 4 or 6, not {version!r}")
        else:
            address = ipaddress.ip_address(address)
            version, address = address.version, int(address)
        bits = self._BITS[version]
        if not 0 <= address < 1 << bits:
            raise ValueError(f"address {address:#x} does not fit IPv{version}")
        tables = self._by_length[version]
        for length in sorted(tables, reverse=True):
            value = tables[length].get(address >> (bits - length))
            if value is not None:
                return value
        return None
