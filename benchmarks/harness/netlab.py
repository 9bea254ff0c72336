"""Shaped network links for tests and benchmarks: a network namespace joined to this one by a
veth pair, with a rate limit and queue (tbf) on each direction.

Why: loopback is instant and lossless, so it never exercises what Likeness is for, people on
poor connections. A namespace we create puts a real peer (Chromium) behind a real kernel link
whose rate and queue we choose, and nothing leaves the machine. Needs root and iproute2
(``ip``, ``tc``); ``unavailable()`` says why not, for a skip reason.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path

_names = count()


@dataclass(frozen=True)
class LinkShape:
    """One direction of a link: a bottleneck of ``rate_kbit`` (0 = unlimited) with a queue of
    ``queue_ms`` milliseconds of traffic at that rate, a home router's buffer, so congestion
    shows up first as delay and then as loss, the way receivers' bandwidth estimators expect.

    A token bucket (tbf), not netem: this machine's kernel has no netem (no added delay or
    random loss); the tests' in-process RTP drop (``tests/support/rtp_loss.py``) covers loss.
    """

    rate_kbit: int = 0
    queue_ms: float = 200.0

    def tbf_args(self) -> list[str]:
        # bucket: 10 ms at the rate, at least two full-size packets (a smaller one stalls a
        # 1,500-byte packet forever)
        burst = max(3028, int(self.rate_kbit * 1000 / 8 * 0.010))
        return ["tbf", "rate", f"{self.rate_kbit}kbit", "burst", str(burst), "latency", f"{self.queue_ms:g}ms"]

    def describe(self) -> str:
        return f"{self.rate_kbit} kbit/s, {self.queue_ms:g} ms queue" if self.rate_kbit > 0 else "unlimited"


def unavailable() -> str | None:
    """Why shaped links cannot be made here (not root, no iproute2), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    return None


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")


class ShapedLink:
    """A namespace whose only way out is a veth pair to this one: ``host_ip`` here,
    ``peer_ip`` in there. ``down`` shapes traffic towards the namespace, ``up`` from it.
    Use as a context manager; ``shape`` changes either direction mid-run."""

    def __init__(self, down: LinkShape | None = None, up: LinkShape | None = None) -> None:
        n = next(_names)
        tag = f"{os.getpid() % 100000}{n}"
        self.ns = f"lk{tag}"
        self.host_if = f"lkh{tag}"[:15]
        self.peer_if = f"lkp{tag}"[:15]
        subnet = (os.getpid() * 7 + n) % 16000  # a /30 in 10.200.0.0/14, unlikely to collide
        a, b = 200 + subnet // 4000, (subnet % 4000) // 64
        c = (subnet % 64) * 4
        self.host_ip = f"10.{a}.{b}.{c + 1}"
        self.peer_ip = f"10.{a}.{b}.{c + 2}"
        self._down = down or LinkShape()
        self._up = up or LinkShape()
        self._scripts: list[Path] = []

    def __enter__(self) -> ShapedLink:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        _run("ip", "netns", "add", self.ns)
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.ns)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self._in_ns("ip", "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_if)
            self._in_ns("ip", "link", "set", self.peer_if, "up")
            self._in_ns("ip", "link", "set", "lo", "up")
            self.shape(self._down, self._up)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _in_ns(self, *cmd: str) -> None:
        _run("ip", "netns", "exec", self.ns, *cmd)

    def shape(self, down: LinkShape | None = None, up: LinkShape | None = None) -> None:
        """Replace the shaping of either direction (None: leave it)."""
        if down is not None:
            self._set(["tc"], self.host_if, down)
            self._down = down
        if up is not None:
            self._set(["ip", "netns", "exec", self.ns, "tc"], self.peer_if, up)
            self._up = up

    @staticmethod
    def _set(tc: list[str], dev: str, shape: LinkShape) -> None:
        if shape.rate_kbit > 0:
            _run(*tc, "qdisc", "replace", "dev", dev, "root", *shape.tbf_args())
        else:  # unlimited: back to the device's default (a veth has no queue of its own)
            subprocess.run([*tc, "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)

    def up_counters(self) -> tuple[int, int]:
        """(packets sent, packets dropped) so far by the shaping from the namespace (its ``tc -s``
        counters): the link's own loss, which receivers' statistics may not see."""
        r = subprocess.run(["ip", "netns", "exec", self.ns, "tc", "-s", "qdisc", "show", "dev", self.peer_if],
                           capture_output=True, text=True, timeout=10)
        m = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", r.stdout)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    def wrap(self, executable: str | Path) -> Path:
        """An executable that runs ``executable`` (with its arguments) inside the namespace, e.g.
        for Playwright's ``executable_path``: the browser then reaches us only through the link."""
        fd, name = tempfile.mkstemp(prefix=f"{self.ns}-", suffix=".sh")
        with os.fdopen(fd, "w") as f:
            f.write(f'#!/bin/sh\nexec ip netns exec {self.ns} "{executable}" "$@"\n')
        path = Path(name)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self._scripts.append(path)
        return path

    def close(self) -> None:
        """Delete the namespace (which takes the veth pair with it) and the wrapper scripts."""
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        for p in self._scripts:
            p.unlink(missing_ok=True)
        self._scripts.clear()
