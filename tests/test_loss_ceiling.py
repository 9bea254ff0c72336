"""A sender backs off on the loss its receiver reports (GCC's loss-based controller): a full queue
has no delay trend, so the receiver's delay-based estimate (REMB) alone lets a slow link drop
packets for good (docs/receiver.md)."""

from __future__ import annotations

import asyncio

import pytest
from support.rtp_loss import drop_incoming_rtp

from benchmarks.harness.calls import http_client, publish, serve_bridge
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.rate_control import BITRATE_RANGE, ENCODER_ATTR, LossCeiling, rate_controlled_encoder

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"


def test_the_ceiling_falls_with_heavy_loss_rises_without_and_holds_between() -> None:
    c = LossCeiling(start=400_000, floor=100_000, cap=500_000)
    assert c.report(64) == int(400_000 * (1 - 0.5 * 0.25))  # 25 % lost
    held = c.bitrate
    assert c.report(13) == int(held)  # ~5 %: between the thresholds, held
    assert c.report(0) == int(held * 1.05)
    for _ in range(40):
        c.report(0)
    assert c.bitrate == 500_000  # never over the cap
    for _ in range(40):
        c.report(255)
    assert c.bitrate == 100_000  # nor under the floor


def test_the_encoder_takes_the_lower_of_the_estimate_and_the_loss_ceiling() -> None:
    enc = rate_controlled_encoder("video/vp8", 600_000)
    assert enc.target_bitrate == 600_000 and enc.loss_ceiling is None
    enc.loss_ceiling = 250_000
    assert enc.target_bitrate == 250_000
    enc.target_bitrate = 400_000  # a receiver estimate over the ceiling does not lift it
    assert enc.target_bitrate == 250_000
    enc.target_bitrate = 200_000  # one under it rules
    assert enc.target_bitrate == 200_000
    enc.loss_ceiling = 50_000  # the floor still holds
    assert enc.target_bitrate == BITRATE_RANGE[0]
    enc.loss_ceiling = 900_000  # and the cap
    enc.target_bitrate = 800_000
    assert enc.target_bitrate == 600_000


@pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
@pytest.mark.timeout(90)
def test_a_publisher_whose_packets_are_lost_lowers_its_bitrate() -> None:
    """A real publisher into the bridge, 30 % of its RTP lost on arrival: the bridge's receiver
    reports the loss and the publisher's encoder falls well under where it started."""
    async def scenario() -> tuple[int, int | None, int]:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/lossy", ClipTrack(frames, fps), bitrate=600_000)
            enc = None
            for _ in range(100):  # the encoder is made on the first frame
                enc = getattr(pub.pc.getSenders()[0], ENCODER_ATTR, None)
                if enc is not None:
                    break
                await asyncio.sleep(0.05)
            assert enc is not None
            start = enc.target_bitrate
            drop_incoming_rtp(bridge.publishers("lossy")[0].pc, 0.3, seed=3)
            await asyncio.sleep(6.0)
            out = (start, enc.loss_ceiling, enc.target_bitrate)
            assert await pub.leave(http) == 200
        return out

    start, ceiling, target = asyncio.run(scenario())
    print(f"\nencoder target {start} -> {target} bit/s (loss ceiling {ceiling})")
    assert ceiling is not None and ceiling < 0.7 * start and target <= ceiling
