"""ICE for the bridge and ``likeness call``: which host candidates are gathered, ICE servers, loopback.

Everything here is per-connection except ``enable_loopback_candidates``, the one documented,
opt-in process-wide patch (aioice has no per-connection hook for host addresses).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_ORIGINAL_GET_HOST_ADDRESSES: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (what a local-only bind looks like)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    extra = ["127.0.0.1"] if use_ipv4 else []
    return extra + [a for a in _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6) if a not in extra]


def enable_loopback_candidates(only: bool = True) -> None:
    """Make every ICE agent in this process gather 127.0.0.1 as a host candidate.

    Why: aioice's ``get_host_addresses`` skips 127.0.0.1 and has no per-connection option,
    so peers on one machine with no other interface (CI, sandboxes) could not connect, and
    tests would pair over the machine's external interface. This swaps that one function:

    * ``only=True``: 127.0.0.1 is the only host candidate, so media never leaves loopback
      (``serve`` on a loopback host, tests, benchmarks);
    * ``only=False``: 127.0.0.1 is added to the usual addresses (``call`` to a local URL, or
      ``serve --loopback-ice add``): a peer that offers loopback candidates pairs over
      127.0.0.1, another one over the machine's own LAN address.

    Process-wide and opt-in; ``only=False`` never widens an earlier ``only=True``.
    ``disable_loopback_candidates`` undoes it.
    """
    if not only and aioice.ice.get_host_addresses is _loopback_only:
        return
    aioice.ice.get_host_addresses = _loopback_only if only else _with_loopback


def disable_loopback_candidates() -> None:
    """Restore aioice's own host-address gathering."""
    aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES


@contextlib.contextmanager
def loopback_candidates(mode: str) -> Iterator[None]:
    """For the block, every ICE agent in the process gathers host candidates as ``mode`` says:
    'only' 127.0.0.1, 'add' 127.0.0.1 and the machine's addresses, 'off' aioice's own (the
    machine's addresses, no loopback). Exactly that, whatever was set before; restored after."""
    gather = {"only": _loopback_only, "add": _with_loopback, "off": _ORIGINAL_GET_HOST_ADDRESSES}[mode]
    previous = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = gather
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = previous


def loopback_mode() -> str | None:
    """'only', 'added' or None: what ``enable_loopback_candidates`` set up."""
    f = aioice.ice.get_host_addresses
    return "only" if f is _loopback_only else "added" if f is _with_loopback else None


def ice_server(url: str) -> RTCIceServer:
    """RTCIceServer from 'stun:host:port' or 'turn:user:pass@host:port[?transport=udp]'."""
    parts = urlsplit(url)
    if parts.scheme not in ("stun", "stuns", "turn", "turns"):
        raise ValueError(f"ICE server URL must start with stun:, stuns:, turn: or turns:, got {url!r}")
    rest = url.split(":", 1)[1]
    if "@" in rest:
        cred, host = rest.rsplit("@", 1)
        user, _, password = cred.partition(":")
        return RTCIceServer(urls=f"{parts.scheme}:{host}", username=unquote(user), credential=unquote(password))
    return RTCIceServer(urls=url)


def rtc_configuration(ice_servers: list[str] | None = None) -> RTCConfiguration:
    """No STUN/TURN unless asked: aiortc's default would contact a public Google STUN server."""
    return RTCConfiguration(iceServers=[ice_server(u) for u in (ice_servers or [])])


_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", re.IGNORECASE)


def keep_loopback_candidates(sdp: str) -> str:
    """Drop remote ICE candidates that are not on 127.0.0.0/8 or ::1.

    Used when the bridge only gathers loopback: pairs towards a peer's other interfaces
    could never succeed and only slow connectivity checks down.
    """
    out = []
    for line in sdp.splitlines():
        m = _CANDIDATE_RE.match(line)
        if m and not is_loopback_host(m.group(1)):
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"
