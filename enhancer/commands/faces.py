"""`likeness faces show IMG -o OUT.png`: draw what the detector and aligner see.

A debugging view: boxes, the 5 dlib landmarks (numbered in dlib order) and each face's
aligned S x S crop in a side panel, so alignment problems are visible before any model runs.
IMG may also be a video (``--frame N`` picks the frame).

The input helpers here are shared with the other single-image commands (``degrade``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np

from ..c_stderr import captured_c_stderr
from ..errors import InputError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv", ".ts", ".mpg", ".mpeg"}
PANEL_MIN, PANEL_MAX = 128, 512  # side of each crop in the panel, px


def register(sub) -> None:
    p = sub.add_parser("faces", help="inspect face detection and alignment")
    fsub = p.add_subparsers(dest="faces_command", required=True, metavar="ACTION")
    show = fsub.add_parser("show", help="draw boxes, landmarks and aligned crops on an image or video frame")
    show.add_argument("image", type=Path, help="image file, or a video file (see --frame)")
    show.add_argument("-o", "--out", type=Path, required=True, help="output image (.png or .jpg)")
    show.add_argument("--frame", type=int, default=0, help="frame index when IMG is a video (default 0)")
    show.add_argument("--size", type=int, default=128, choices=[128, 256, 512], help="aligned crop size S")
    show.set_defaults(func=_show)


def read_video_frame(path: Path, index: int = 0) -> np.ndarray:
    """Decode frame ``index`` of a video as BGR uint8, or raise ``InputError`` saying why not."""
    import av

    from ..video_io import open_video, unreadable

    if index < 0:
        raise InputError(f"--frame must be >= 0 (got {index})")
    try:
        with open_video(path) as container:
            count = 0
            for frame in container.decode(video=0):
                if count == index:
                    return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
                count += 1
    except av.error.FFmpegError as e:
        raise unreadable(path, e) from None
    raise InputError(f"{path}: frame {index} requested but the video has {count} frame(s)")


def read_input_image(path: Path, frame: int = 0) -> tuple[np.ndarray, str | None]:
    """Read an image (or a video frame, by suffix) as BGR uint8 with one-line errors.

    Gray, RGBA and 16-bit images are converted. Returns the image and the decoder's damage
    note (e.g. 'Corrupt JPEG data: ...') or None, so the caller can report it in its one line.
    """
    from ..imageio import read_image

    if path.suffix.lower() in VIDEO_SUFFIXES:
        return read_video_frame(path, frame), None
    with captured_c_stderr() as warnings:
        img = read_image(path)
    return img, (warnings[0] if warnings else None)


def warn_damage(path: Path, note: str | None) -> None:
    """One stderr line when the input decoded but the decoder reported damage."""
    if note:
        print(f"likeness: warning: {path}: decoder reported damage ({note})", file=sys.stderr)


def check_output(path: Path) -> None:
    """Fail before any work if OpenCV cannot encode the output's format."""
    if not path.suffix or not cv2.haveImageWriter(str(path)):
        raise InputError(f"{path}: unknown output image format '{path.suffix}' (use .png or .jpg)")


def write_output(path: Path, img: np.ndarray) -> None:
    """Write an image, turning filesystem and encoder failures into ``InputError``."""
    from ..imageio import write_image

    check_output(path)
    try:
        write_image(path, img)
    except FileExistsError:
        raise InputError(f"{path}: cannot write (a parent path exists and is not a folder)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None
    except cv2.error as e:
        raise InputError(f"{path}: cannot encode image ({str(e).strip().splitlines()[-1]})") from None


def find_faces(img: np.ndarray) -> list:
    """Detections, retrying with 2x upsampling for small faces (as ``data prepare`` does)."""
    from ..detect import detect_faces

    dets = detect_faces(img, max_side=800)
    return dets or detect_faces(img, max_side=800, upsample=1)


def render(img: np.ndarray, dets: list, size: int) -> np.ndarray:
    """Annotated copy of ``img`` with a right-hand panel of the aligned crops.

    Crops are shown as large as the frame height allows (128-512 px); enlargement uses
    nearest-neighbour so the crop's real pixels stay visible.
    """
    from ..align import alignment_matrix, warp_crops

    h, w = img.shape[:2]
    unit = max(1, round(max(h, w) / 400))
    view = img.copy()
    colours = [(0, 255, 0), (0, 200, 255), (255, 128, 0), (255, 0, 255), (0, 0, 255)]
    side = max(PANEL_MIN, min(PANEL_MAX, h // max(2, len(dets))))
    crops = []
    for i, d in enumerate(dets):
        col = colours[i % len(colours)]
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(view, (x0, y0), (x1, y1), col, unit)
        cv2.putText(view, f"{i} {d.score:.2f}", (x0, max(12 * unit, y0 - 4 * unit)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * unit, col, unit, cv2.LINE_AA)
        for k, (x, y) in enumerate(d.landmarks):
            cv2.circle(view, (int(round(x)), int(round(y))), 2 * unit, (0, 0, 255), -1, cv2.LINE_AA)
            cv2.putText(view, str(k), (int(x) + 3 * unit, int(y) - 2 * unit), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3 * unit, (255, 255, 255), max(1, unit // 2), cv2.LINE_AA)
        crop = warp_crops(img, alignment_matrix(d.landmarks, size)[None], size)[0]
        interp = cv2.INTER_NEAREST if side >= size else cv2.INTER_AREA
        crop = cv2.resize(crop, (side, side), interpolation=interp)
        k = side / PANEL_MIN
        cv2.putText(crop, f"{i} ({size}px)", (int(4 * k), int(16 * k)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45 * k, col, max(1, int(k)), cv2.LINE_AA)
        crops.append(crop)
    rows = max(1, h // side)
    cols = math.ceil(len(crops) / rows)
    canvas = np.zeros((max(h, side), w + cols * side, 3), np.uint8)
    canvas[:h, :w] = view
    for i, crop in enumerate(crops):
        r, c = i % rows, i // rows
        canvas[r * side:(r + 1) * side, w + c * side:w + (c + 1) * side] = crop
    return canvas


def _show(args) -> int:
    check_output(args.out)
    img, damage = read_input_image(args.image, args.frame)
    dets = find_faces(img)
    if not dets:
        note = f" (decoder reported damage: {damage})" if damage else ""
        raise InputError(f"{args.image}: no face found{note}")
    write_output(args.out, render(img, dets, args.size))
    warn_damage(args.image, damage)
    print(f"{len(dets)} face(s) -> {args.out}")
    return 0
