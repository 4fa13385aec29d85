"""Well-formed packets for differential runs: Ethernet with 0-2 VLAN tags, IPv4 with options or IPv6 with
extension headers, TCP with options, UDP, ICMP, and a random payload. Checksums are right, so programs that
parse headers take their deep paths."""

from __future__ import annotations

import random
import struct

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, ETH_P_ARP = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(6)  # the loopback device's address: PACKET_HOST in a test run
    if kind == 1:
        return b"\xff" * 6
    return bytes(rng.getrandbits(8) for _ in range(6))


def _payload(rng: random.Random, limit: int = 256) -> bytes:
    size = rng.choice([0, 1, 4, 8, 16, rng.randrange(limit + 1)])
    return rng.randbytes(size)


def tcp(rng: random.Random, src: bytes, dst: bytes, pseudo_proto: int, payload: bytes) -> bytes:
    opts = b""
    for _ in range(rng.randrange(4)):
        kind = rng.choice([1, 2, 3, 4, 8])
        opts += {1: b"\x01", 2: b"\x02\x04" + struct.pack("!H", rng.choice([536, 1460, 9000])),
                 3: b"\x03\x03" + bytes([rng.randrange(15)]), 4: b"\x04\x02",
                 8: b"\x08\x0a" + rng.randbytes(8)}[kind]
    opts += bytes(-len(opts) % 4)
    opts = opts[:40]
    doff = (20 + len(opts)) // 4
    flags = rng.choice([0x02, 0x10, 0x12, 0x18, 0x11, 0x04, rng.randrange(0x200)])
    hdr = struct.pack("!HHIIBBHHH", rng.choice([80, 443, 53, rng.randrange(65536)]), rng.randrange(65536),
                      rng.getrandbits(32), rng.getrandbits(32), doff << 4, flags & 0xFF, rng.randrange(65536), 0,
                      0) + opts
    seg = hdr + payload
    pseudo = _pseudo(src, dst, pseudo_proto, len(seg))
    csum = checksum(pseudo + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def udp(rng: random.Random, src: bytes, dst: bytes, pseudo_proto: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", rng.choice([53, 67, 4789, rng.randrange(65536)]), rng.randrange(65536),
                      8 + len(payload), 0) + payload
    csum = checksum(_pseudo(src, dst, pseudo_proto, len(seg)) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def icmp(rng: random.Random, payload: bytes) -> bytes:
    msg = struct.pack("!BBHHH", rng.choice([0, 3, 8, 11]), rng.randrange(16), 0, rng.randrange(65536),
                      rng.randrange(65536)) + payload
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def ipv4(rng: random.Random) -> bytes:
    src, dst = rng.randbytes(4), rng.choice([bytes([10, 0, 0, 2]), bytes([127, 0, 0, 1]), rng.randbytes(4)])
    proto = rng.choice([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, rng.randrange(256)])
    opts = b""
    if rng.random() < 0.3:
        opts = rng.choice([b"\x01" * 4, b"\x94\x04\x00\x00", b"\x07\x07\x04" + bytes(4) + b"\x00",
                           b"\x44\x0c\x05\x00" + bytes(8)])
        opts += bytes(-len(opts) % 4)
    transport = _transport(rng, src, dst, proto)
    ihl = 5 + len(opts) // 4
    frag = rng.choice([0, 0, 0x4000, 0x2000, rng.randrange(0x10000)])
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, rng.choice([0, 0x10, 0xB8]), 4 * ihl + len(transport),
                      rng.randrange(65536), frag, rng.choice([1, 64, 255]), proto, 0, src, dst) + opts
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + transport


def ipv6(rng: random.Random) -> bytes:
    src, dst = rng.randbytes(16), rng.choice([bytes(15) + b"\x01", rng.randbytes(16)])
    proto = rng.choice([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, rng.randrange(256)])
    exts = b""
    nxt = proto
    for _ in range(rng.choice([0, 0, 1, 2])):
        ext_len = rng.randrange(3)
        body = bytes([nxt, ext_len]) + rng.randbytes(6 + 8 * ext_len)
        exts = body + exts
        nxt = rng.choice(IPV6_EXT)
    transport = _transport(rng, src, dst, proto)
    payload = exts + transport
    hdr = struct.pack("!IHBB16s16s", (6 << 28) | rng.getrandbits(20), len(payload), nxt, rng.choice([1, 64, 255]),
                      src, dst)
    return hdr + payload


def _transport(rng: random.Random, src: bytes, dst: bytes, proto: int) -> bytes:
    payload = _payload(rng)
    if proto == IPPROTO_TCP:
        return tcp(rng, src, dst, proto, payload)
    if proto == IPPROTO_UDP:
        return udp(rng, src, dst, proto, payload)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return icmp(rng, payload)
    return payload


def ethernet(rng: random.Random) -> bytes:
    """One Ethernet frame: IPv4 or IPv6 (or ARP, or an unknown EtherType) behind 0-2 VLAN tags."""
    kind = rng.choice(["ipv4", "ipv4", "ipv6", "ipv6", "arp", "other"])
    if kind == "ipv4":
        ethertype, l3 = ETH_P_IP, ipv4(rng)
    elif kind == "ipv6":
        ethertype, l3 = ETH_P_IPV6, ipv6(rng)
    elif kind == "arp":
        ethertype, l3 = ETH_P_ARP, struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, rng.choice([1, 2])) + rng.randbytes(20)
    else:
        ethertype, l3 = rng.randrange(65536), _payload(rng)
    tags = b""
    for k in range(rng.choice([0, 0, 0, 1, 2])):
        tpid = ETH_P_8021AD if k == 0 and rng.random() < 0.5 else ETH_P_8021Q
        tags += struct.pack("!HH", tpid, rng.randrange(65536))
    frame = _mac(rng) + _mac(rng) + tags + struct.pack("!H", ethertype) + l3
    if rng.random() < 0.1:
        frame += rng.randbytes(rng.randrange(1, 64))  # trailing padding past the IP length
    return frame
