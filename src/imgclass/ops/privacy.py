"""What the warehouse keeps of a client address: all of it, a truncated network, or a keyed hash.

``IMGCLASS_IP_STORAGE``:
- ``full``: the address as seen (after trusted-proxy resolution);
- ``truncated``: IPv4 to its /24, IPv6 to its /48 (``203.0.113.0``, ``2001:db8:1::``), enough
  for "which network" analytics and no longer one household;
- ``hashed``: ``h:`` + 16 hex digits of HMAC-SHA256 under a secret key, so the same client
  groups together while the address cannot be recovered (a plain hash of the 2^32 IPv4
  addresses is reversed in minutes; a keyed one is not without the key).

Truncated and hashed addresses are taken in their canonical form first: an IPv4 client
reported by a dual-stack listener (``::ffff:203.0.113.77``) is the IPv4 address, and an IPv6
address is written one way (``2001:DB8:0:0::1`` is ``2001:db8::1``), so one client is one
network and one hash however the server spelled it.

The key comes from ``IMGCLASS_IP_HASH_KEY`` or, if unset, is generated once into
``<data dir>/ip-hash-key`` (mode 0600) so hashes stay stable across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

TRUNCATE_V4 = 24
TRUNCATE_V6 = 48


def canonical_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address parsed, an IPv4-mapped IPv6 address as its IPv4 one; None if unparsable."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if ip.version == 6:
        # A dual-stack listener (bound to ::) reports IPv4 clients as ::ffff:a.b.c.d; cut
        # to a /48 that was "::" for every one of them.
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id:  # fe80::1%eth0: the interface says nothing about the client
            ip = ipaddress.IPv6Address(ip.packed)
    return ip


def truncate_ip(address: str) -> str:
    ip = canonical_ip(address)
    if ip is None:
        return "unknown"
    prefix = TRUNCATE_V4 if ip.version == 4 else TRUNCATE_V6
    return str(ipaddress.ip_network((ip, prefix), strict=False).network_address)


def hash_ip(address: str, key: bytes) -> str:
    ip = canonical_ip(address)
    text = str(ip) if ip is not None else address
    return "h:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


def load_or_create_key(path: Path) -> bytes:
    """The hashing key saved at ``path``, created (0600) on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir, owner-only
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker created it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


class IpPolicy:
    """Turns a client address into what gets stored, per ``IMGCLASS_IP_STORAGE``."""

    def __init__(self, mode: str, key: bytes | None = None):
        if mode == "hashed" and not key:
            raise ValueError("hashed IP storage needs a key")
        self.mode = mode
        self._key = key

    def __call__(self, address: str) -> str:
        if self.mode == "truncated":
            return truncate_ip(address)
        if self.mode == "hashed":
            return hash_ip(address, self._key)
        return address
