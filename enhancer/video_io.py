"""Reading video: files through PyAV, a camera through OpenCV, every failure one ``InputError`` line.

Enhancement, enrolment, ``faces show`` and `likeness call` all open user-given videos; the
reasons one cannot be read (missing, a folder, empty, not a video, no video stream, corrupt
packets) are worded here once, so every command reports them alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import InputError


def unreadable(path: Path | str, e: BaseException) -> InputError:
    """The one-line error for a file FFmpeg cannot open or decode."""
    return InputError(f"{path}: not a readable video ({getattr(e, 'strerror', None) or type(e).__name__})")


def open_video(path: Path | str) -> av.container.InputContainer:
    """Open a video file for reading (the caller closes it), or raise a one-line ``InputError``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: is a directory, expected a video file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError) as e:
        raise unreadable(p, e) from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{p}: no video stream (expected a video)")
    return container


def _frame_count(path: Path) -> int:
    """Frames in the first video stream: the header's count, else a packet count (no decoding)."""
    with open_video(path) as c:
        st = c.streams.video[0]
        if st.frames:
            return int(st.frames)
        return sum(1 for pkt in c.demux(st) if pkt.size)


def sample_video_frames(path: Path | str, n: int, progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, BGR frame) for ``n`` frames spread evenly over the clip; a still image is refused."""
    from tqdm import tqdm

    path = Path(path)
    with open_video(path) as c:
        if c.format.name == "image2" or c.format.name.endswith("_pipe"):
            raise InputError(f"{path}: is a still image, not a video")
    try:
        total = _frame_count(path)
        if total < 1:
            raise InputError(f"{path}: the video has no frames")
        wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())
        last = max(wanted)
        with open_video(path) as c, tqdm(total=last + 1, desc="scanning video", unit="frame",
                                         disable=None if progress else True, file=sys.stderr) as bar:
            st = c.streams.video[0]
            st.thread_type = "AUTO"
            for i, frame in enumerate(c.decode(st)):
                bar.update(1)
                if i in wanted:
                    yield i, np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
                if i >= last:
                    break
    except av.error.FFmpegError as e:
        raise unreadable(path, e) from None


def capture_camera(index: int, seconds: float, n: int,
                   on_open: Callable[[], None] | None = None) -> list[tuple[int, np.ndarray]]:
    """About ``n`` frames captured evenly over ``seconds`` from camera ``index``;
    ``on_open`` runs once the camera is open (to tell the user to look at it)."""
    from .c_stderr import captured_c_stderr

    with captured_c_stderr():  # OpenCV's backends print their probing failures on fd 2
        cap = cv2.VideoCapture(index)
        opened = cap.isOpened()
    if not opened:
        cap.release()
        raise InputError(f"cannot open camera {index} (no camera found, or it is in use by another program)")
    frames: list[tuple[int, np.ndarray]] = []
    if on_open:
        on_open()
    try:
        interval = seconds / max(1, n)
        start = time.monotonic()
        next_t = start
        i = 0
        while time.monotonic() - start < seconds and len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            now = time.monotonic()
            if now >= next_t:
                frames.append((i, frame))
                next_t = now + interval
            i += 1
    finally:
        cap.release()
    if not frames:
        raise InputError(f"camera {index} opened but delivered no frames")
    return frames
