"""bridge/sources.py: the local sources of `likeness call`.

``FileTrack`` plays a video file in real time, looping, on one continuous 90 kHz clock (aiortc's
MediaPlayer restarts pts at 0 on each loop, which makes the RTP clock go backwards);
``open_source`` picks a camera (V4L2 through aiortc's MediaPlayer) or a file. The clips here are
real: frames of a shared-data clip, each stamped with its index, re-encoded short so a loop is
cheap to watch.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

import bridge.sources as sources
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import read_stamp, stamp
from bridge.sources import CLOCK, FileTrack, open_source
from enhancer.errors import InputError, LikenessError

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d8.mp4"  # 480x480, 30 fps
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")


def write_clip(path: Path, n: int, fps: int) -> Path:
    """``n`` real frames (downscaled to 240x240), stamped 0..n-1, as an H.264 mp4 at ``fps``."""
    import cv2

    frames, _ = load_clip(CLIP, n)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 240, 240, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for i, f in enumerate(frames):
            img = stamp(cv2.resize(f, (240, 240), interpolation=cv2.INTER_AREA), i)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


async def read(track: FileTrack, n: int) -> list[tuple[int, Fraction, int, float]]:
    """(pts, time_base, stamped index, arrival time) of ``n`` frames."""
    got = []
    for _ in range(n):
        f = await asyncio.wait_for(track.recv(), 5)
        got.append((f.pts, f.time_base, read_stamp(f.to_ndarray(format="gray")[..., None]), time.monotonic()))
    return got


@needs_clip
@pytest.mark.timeout(30)
def test_file_track_loops_on_one_continuous_clock(tmp_path: Path) -> None:
    """A 10-frame 25 fps clip read for 26 frames: the content starts over after frame 9, the pts never do
    (n * 90000 / 25, time base 1/90000), and frames come at the file's own rate, not as fast as decoding."""
    clip = write_clip(tmp_path / "ten.mp4", 10, 25)
    track = FileTrack(clip)
    assert track.fps == 25.0
    got = asyncio.run(read(track, 26))
    pts, bases, index, at = zip(*got, strict=True)
    assert list(index) == [i % 10 for i in range(26)]  # looped twice, from the first frame each time
    assert list(pts) == [i * CLOCK // 25 for i in range(26)]  # 3600 ticks apart across both loop ends
    assert set(bases) == {Fraction(1, CLOCK)}
    span = at[-1] - at[0]
    assert 25 / 25 * 0.95 <= span < 25 / 25 + 1.0, span  # paced: 25 intervals of 40 ms
    assert track.readyState == "live"
    track.stop()
    assert track.readyState == "ended"
    with pytest.raises(MediaStreamError):
        asyncio.run(track.recv())


@needs_clip
@pytest.mark.timeout(30)
def test_file_track_without_loop_ends_after_the_last_frame(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "six.mp4", 6, 30)
    track = FileTrack(clip, loop=False)

    async def drain() -> tuple[list[int], list[int]]:
        got = await read(track, 6)
        with pytest.raises(MediaStreamError):
            await track.recv()
        return [g[0] for g in got], [g[2] for g in got]

    pts, index = asyncio.run(drain())
    assert index == list(range(6)) and pts == [i * CLOCK // 30 for i in range(6)]
    assert track.readyState == "ended"


@needs_clip
@pytest.mark.timeout(30)
def test_file_track_plays_a_real_clip_as_decoded() -> None:
    """The shared-data clip itself: its 30 fps, its 480x480 frames, pixel for pixel what PyAV decodes."""
    frames, fps = load_clip(CLIP, 3)
    track, closer = open_source(str(CLIP))
    assert isinstance(track, FileTrack) and closer is track and track.fps == fps == 30.0

    async def first() -> list[av.VideoFrame]:
        return [await track.recv() for _ in range(3)]

    got = asyncio.run(first())
    track.stop()
    for i, f in enumerate(got):
        assert (f.width, f.height, f.pts) == (480, 480, i * 3000)
        assert np.array_equal(f.to_ndarray(format="bgr24"), frames[i])


def test_file_track_refuses_what_it_cannot_play(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        FileTrack(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="is a directory, expected a video file"):
        FileTrack(tmp_path)  # a folder
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(InputError, match="not a readable video"):
        FileTrack(text)
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))  # anything else than the camera is a file


# --- the camera path -------------------------------------------------------------------------


def test_camera_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.glob, "glob", lambda pattern: [])  # a machine without /dev/video*
    with pytest.raises(LikenessError, match=r"no camera found \(/dev/video\*\); pass --source FILE"):
        open_source("camera")
    with pytest.raises(LikenessError, match="no camera found"):
        open_source("/dev/video97")  # an explicit device that does not exist


def test_camera_that_is_not_a_v4l2_device_cannot_be_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first device found is opened with the real MediaPlayer as V4L2; a node that is no camera is
    reported with its path, not as a traceback."""
    fake = tmp_path / "video0"
    fake.write_bytes(b"\0" * 64)
    monkeypatch.setattr(sources.glob, "glob", lambda pattern: [str(fake)] if pattern == "/dev/video*" else [])
    with pytest.raises(LikenessError, match=f"cannot open camera {fake}"):
        open_source("camera")


class FakePlayer:
    """Stands in for aiortc's MediaPlayer where no camera exists: records how it was opened."""

    opened: list[tuple[str, str | None, dict]] = []

    def __init__(self, file: str, format: str | None = None, options: dict | None = None) -> None:  # noqa: A002
        FakePlayer.opened.append((file, format, dict(options or {})))
        self.video = None if file.endswith("audio-only") else object()


class DevPath(type(Path())):
    """A Path for which every /dev/video* node exists (only open_source's own lookups see it)."""

    def exists(self, *, follow_symlinks: bool = True) -> bool:
        return str(self).startswith("/dev/video")


def test_camera_opens_the_first_device_as_v4l2_640x480_at_30(monkeypatch: pytest.MonkeyPatch) -> None:
    FakePlayer.opened = []
    monkeypatch.setattr(sources, "MediaPlayer", FakePlayer)
    monkeypatch.setattr(sources.glob, "glob", lambda pattern: ["/dev/video2", "/dev/video0"])
    monkeypatch.setattr(sources, "Path", DevPath)
    track, player = open_source("camera")
    assert isinstance(player, FakePlayer) and track is player.video
    assert FakePlayer.opened == [("/dev/video0", "v4l2", {"framerate": "30", "video_size": "640x480"})]
    # an explicit device is used as given, not the first one found
    track, player = open_source("/dev/video2")
    assert FakePlayer.opened[-1][0] == "/dev/video2" and track is player.video
    with pytest.raises(LikenessError, match="/dev/videoaudio-only has no video stream"):
        open_source("/dev/videoaudio-only")
