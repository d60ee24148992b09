"""A real MaxMind DB (GeoLite2-Country shaped) written by the tests: the format -- a binary
search tree over the address bits, a data section, metadata -- is small enough that a few lines
make a valid file, so the tests read it through geoip2 and maxminddb exactly as production does
(no writer library is installed, and the real GeoLite2 file needs a MaxMind account)."""

from __future__ import annotations

import ipaddress
import struct
import time
from pathlib import Path
from typing import Any


def _control(type_: int, size: int) -> bytes:
    assert size < 29
    if type_ <= 7:
        return bytes([(type_ << 5) | size])
    return bytes([size, type_ - 7])  # extended type: 0 in the control byte, then type - 7


def _uint(type_: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(type_, len(payload)) + payload


def _encode(value: Any) -> bytes:
    if isinstance(value, tuple):  # ("u16" | "u32" | "u64", n): metadata wants exact types
        return _uint({"u16": 5, "u32": 6, "u64": 9}[value[0]], value[1])
    if isinstance(value, str):
        data = value.encode()
        return _control(2, len(data)) + data
    if isinstance(value, dict):
        return _control(7, len(value)) + b"".join(_encode(k) + _encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(_encode(v) for v in value)
    raise TypeError(value)


def write_country_mmdb(path: Path, networks: dict[str, str]) -> Path:
    """An IPv4 GeoLite2-Country database mapping each network (CIDR) to a country code."""
    data = b""
    offsets: dict[str, int] = {}
    for country in sorted(set(networks.values())):
        offsets[country] = len(data)
        data += _encode({"country": {"iso_code": country, "names": {"en": country}}})
    root: dict[int, Any] = {}
    for cidr, country in networks.items():
        net = ipaddress.ip_network(cidr)
        bits = format(int(net.network_address), "032b")[: net.prefixlen]
        node = root
        for bit in bits[:-1]:
            node = node.setdefault(int(bit), {})
        node[int(bits[-1])] = ("data", country)
    # Number the nodes breadth first, then write each as two 24-bit records.
    order = [root]
    for node in order:
        order += [child for child in (node.get(0), node.get(1)) if isinstance(child, dict)]
    index = {id(node): i for i, node in enumerate(order)}
    count = len(order)
    tree = b""
    for node in order:
        for side in (0, 1):
            child = node.get(side)
            if child is None:
                record = count  # no data
            elif isinstance(child, dict):
                record = index[id(child)]
            else:
                record = count + 16 + offsets[child[1]]
            tree += struct.pack(">I", record)[1:]
    metadata = {
        "node_count": ("u32", count),
        "record_size": ("u16", 24),
        "ip_version": ("u16", 4),
        "database_type": "GeoLite2-Country",
        "languages": ["en"],
        "binary_format_major_version": ("u16", 2),
        "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", int(time.time())),
        "description": {"en": "Atelier test countries"},
    }
    path.write_bytes(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + _encode(metadata))
    return path
