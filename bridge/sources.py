"""Local video sources for `likeness call`: a V4L2 camera, or a video file played in a loop.

aiortc's MediaPlayer restarts pts at 0 when it loops a file, which makes the RTP clock go
backwards and the pacing burst; ``FileTrack`` decodes video only and keeps a continuous
clock across loops.
"""

from __future__ import annotations

import asyncio
import glob
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from enhancer.errors import LikenessError
from enhancer.video_io import open_video, unreadable

CLOCK = 90_000


class FileTrack(MediaStreamTrack):
    """Video frames of a file at its own frame rate, looping, with monotonically increasing pts."""

    kind = "video"

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__()
        p = Path(path)
        self._container = open_video(p)
        stream = self._container.streams.video[0]
        self.fps = float(stream.average_rate or 30) or 30.0
        self._stream = stream
        self._loop = loop
        self._frames = self._container.decode(stream)
        self._n = 0
        self._start: float | None = None
        self._path = p

    def _next(self) -> VideoFrame | None:
        for _ in range(2):
            try:
                return next(self._frames)
            except StopIteration:
                if not self._loop:
                    return None
                self._container.seek(0)
                self._frames = self._container.decode(self._stream)
            except av.FFmpegError as e:
                raise unreadable(self._path, e) from None
        return None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await asyncio.to_thread(self._next)
        if frame is None:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame.pts = round(self._n * CLOCK / self.fps)
        frame.time_base = Fraction(1, CLOCK)
        self._n += 1
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()


def open_source(source: str) -> tuple[MediaStreamTrack, Any]:
    """(video track, object to close) for 'camera', a /dev/video* path, or a video file."""
    if source == "camera" or source.startswith("/dev/video"):
        devices = sorted(glob.glob("/dev/video*")) if source == "camera" else [source]
        if not devices or not Path(devices[0]).exists():
            raise LikenessError("no camera found (/dev/video*); pass --source FILE to send a video file instead")
        try:
            player = MediaPlayer(devices[0], format="v4l2", options={"framerate": "30", "video_size": "640x480"})
        except Exception as e:
            raise LikenessError(f"cannot open camera {devices[0]}: {e}") from None
        if player.video is None:
            raise LikenessError(f"{devices[0]} has no video stream")
        return player.video, player
    track = FileTrack(source)
    return track, track
