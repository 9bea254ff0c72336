"""In-process RTP loss: drop a share of received packets so recovery (NACK, PLI) runs for real."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aiortc import RTCPeerConnection


@dataclass
class RtpLoss:
    """Counts of what ``drop_incoming_rtp`` let through and dropped."""

    passed: int = 0
    dropped: int = 0


def drop_incoming_rtp(pc: RTCPeerConnection, rate: float, seed: int = 0) -> RtpLoss:
    """Drop a seeded share ``rate`` of the RTP packets ``pc`` receives (RTCP untouched), as a
    lossy link would: they vanish after arrival, so NACKs, retransmissions and PLIs run for real.

    Wraps each of the connection's DTLS transports on the instance; call once the transports
    exist (after negotiation). In-process, so a test needs no network namespace or netem."""
    rng = np.random.default_rng(seed)
    loss = RtpLoss()
    for transport in {r.transport for r in pc.getReceivers() if r.transport is not None}:
        handle = transport._handle_rtp_data

        async def lossy(data: bytes, arrival_time_ms: int, handle=handle) -> None:  # type: ignore[no-untyped-def]
            if rng.random() < rate:
                loss.dropped += 1
                return
            loss.passed += 1
            await handle(data, arrival_time_ms)

        transport._handle_rtp_data = lossy  # type: ignore[method-assign]
    return loss
