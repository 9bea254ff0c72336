"""Tracker on real clips: landmark stability and identity of tracks."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from enhancer.imageio import read_image
from enhancer.tracker import FaceTracker, TrackerConfig, eye_distance

CLIP = "LivePortrait__assets__examples__driving__d13.mp4"  # 720x1280 webcam-style
WINDOW = 45  # frames (1.5 s) for the quasi-static segment


def decode(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """(BGR frame, time in s), streamed so a long HD clip never sits in memory."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for f in c.decode(stream):
            yield f.to_ndarray(format="bgr24"), float(f.time if f.time is not None else 0.0)


def jitter(track: np.ndarray) -> float:
    """Mean magnitude (px) of the landmarks' second difference: acceleration that motion lacks."""
    return float(np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=2).mean())


def quasi_static_start(raw: np.ndarray, window: int) -> int:
    """Start of the window in which the landmark centroid moves least (peak-to-peak, px)."""
    spans = [np.ptp(raw[s:s + window].mean(1), axis=0).max() for s in range(len(raw) - window)]
    return int(np.argmin(spans))


def test_smoothing_reduces_landmark_jitter(shared_data: Path) -> None:
    tracker = FaceTracker()
    raw, smooth, ids = [], [], set()
    for frame, t in decode(shared_data / "videos" / CLIP):
        faces = tracker.update(frame, t)
        assert len(faces) == 1, "the clip shows one face in every frame"
        raw.append(faces[0].raw_landmarks)
        smooth.append(faces[0].landmarks)
        ids.add(faces[0].track_id)
    raw_a, smooth_a = np.array(raw), np.array(smooth)
    s = quasi_static_start(raw_a, WINDOW)
    span = np.ptp(raw_a[s:s + WINDOW].mean(1), axis=0).max()
    eye = np.mean([eye_distance(lm) for lm in raw_a[s:s + WINDOW]])
    before, after = jitter(raw_a[s:s + WINDOW]), jitter(smooth_a[s:s + WINDOW])
    print(f"\nquasi-static frames {s}-{s + WINDOW} (centroid span {span:.1f} px, eye distance {eye:.0f} px): "
          f"jitter raw {before:.3f} px, smoothed {after:.3f} px; whole clip raw {jitter(raw_a):.3f}, "
          f"smoothed {jitter(smooth_a):.3f}")
    assert span < 0.1 * eye, "no quasi-static segment found"
    assert before > 0.1, "raw landmarks suspiciously still: is the tracker returning smoothed points as raw?"
    assert after < 0.5 * before
    # smoothing must not lag far behind: mean offset from the raw points stays small
    assert np.linalg.norm(smooth_a - raw_a, axis=2).mean() < 0.05 * eye
    assert ids == {0}, f"one face, one track id for the whole clip (got {sorted(ids)})"


def two_face_frame(root: Path) -> np.ndarray:
    """Two different CelebA identities' photos side by side, resized to one height."""
    with (root / "celeba" / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "crops"]
    first = rows[0]
    second = next(r for r in rows if r["identity"] != first["identity"])
    imgs = [read_image(root / "celeba" / r["path"]) for r in (first, second)]
    h = 360
    imgs = [cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_CUBIC)
            for im in imgs]
    gap = np.full((h, 40, 3), 127, np.uint8)
    return np.hstack([imgs[0], gap, imgs[1]])


def test_two_faces_get_distinct_stable_ids(shared_data: Path) -> None:
    frame = two_face_frame(shared_data)
    mid = frame.shape[1] / 2
    tracker = FaceTracker(TrackerConfig(detect_every=5))
    seen: list[dict[str, int]] = []
    kinds = set()
    for i in range(12):  # covers detection frames and tracking frames
        faces = tracker.update(frame, i / 30)
        kinds.add(tracker.last_was_detection)
        assert len(faces) == 2
        sides = {("left" if f.landmarks[:, 0].mean() < mid else "right"): f.track_id for f in faces}
        assert set(sides) == {"left", "right"}, "one track per photo"
        seen.append(sides)
    assert kinds == {True, False}
    assert seen[0]["left"] != seen[0]["right"]
    assert all(s == seen[0] for s in seen), f"ids changed between frames: {seen}"


def test_max_faces_limits_tracks(shared_data: Path) -> None:
    frame = two_face_frame(shared_data)
    assert len(FaceTracker(TrackerConfig(max_faces=1)).update(frame, 0.0)) == 1


def test_no_face_backs_off_detection_and_picks_up_a_face_within_the_cap(shared_data: Path) -> None:
    """With no face in view the tracker must not run a detection on every frame (~20 ms each),
    yet a face that comes into view is found within the back-off's cap, whatever the phase."""
    cfg = TrackerConfig()
    fps = 30.0
    clip = decode(shared_data / "videos" / "LivePortrait__assets__examples__driving__d6.mp4")  # one face
    faces_in = [frame for frame, _ in (next(clip) for _ in range(90))]
    # the same real frames upside down: real texture and light, but no face HOG can find
    empty = [cv2.flip(f, 0) for f in faces_in]
    cap = min(cfg.miss_every_max, math.ceil(cfg.miss_gap_max_s * fps))  # frames a face may wait, at most
    tracker = FaceTracker(cfg)
    n = 0

    def step(img: np.ndarray) -> int:
        nonlocal n
        found = len(tracker.update(img, n / fps))
        n += 1
        return found

    # nothing in view from the start: the first frames are all searched, then fewer and fewer
    searched = []
    for img in empty[:60]:
        assert step(img) == 0
        searched.append(tracker.last_was_detection)
    assert all(searched[: cfg.miss_grace]), searched
    print(f"\n{sum(searched)} detections in {len(searched)} face-less frames (cap {cap} frames)")
    assert sum(searched) <= len(searched) / 3, searched

    # a face appears after face-less stretches of every length modulo the widest gap: each time it
    # is found within the cap; it then stays tracked, and once it is gone the search starts afresh
    delays = []
    for k in range(cap):
        for img in empty[: 20 + k]:
            assert step(img) == 0
        delay = next((i for i, img in enumerate(faces_in[:cap + 5]) if step(img)), None)
        assert delay is not None and delay < cap, (k, delay)
        delays.append(delay)
        assert all(step(img) == 1 for img in faces_in[delay + 1: delay + 6])
        # the face leaves: searches at every frame for the grace frames after the loss is noticed
        lost = [(step(img), tracker.last_was_detection) for img in empty[: cfg.detect_every + cfg.miss_grace + 1]]
        first_empty = next(i for i, (found, _) in enumerate(lost) if not found)
        start = first_empty if lost[first_empty][1] else first_empty + 1  # lost by tracking: search next
        assert all(d for _, d in lost[start: start + cfg.miss_grace]), lost
    print(f"face found after {delays} frames (by phase)")


def test_background_redetection_finds_a_new_face_without_detecting_on_a_frame(shared_data: Path) -> None:
    """In a call (``in_background``) the periodic re-detection runs beside the frames: no frame of
    a tracked face runs HOG itself, the tracked face keeps its track, and a second face that comes
    into view is still picked up, a few frames after the detection that found it was started."""
    import threading

    cfg = TrackerConfig(detect_max_side=960)
    clip = decode(shared_data / "videos" / "LivePortrait__assets__examples__driving__d6.mp4")  # 480x480, one face
    frames = [frame for frame, _ in (next(clip) for _ in range(60))]
    appears = 25
    # two panels side by side: the face on the left throughout; on the right the same frames upside
    # down (real texture, no face HOG finds) until ``appears``, then a second, upright face
    scene = [np.concatenate([f, cv2.flip(f, 0) if i < appears else f[:, ::-1]], 1) for i, f in enumerate(frames)]
    tracker = FaceTracker(cfg)
    tracker.in_background()
    counts, ids, detected = [], [], []
    try:
        for i, img in enumerate(scene):
            faces = tracker.update(img, i / 30)
            counts.append(len(faces))
            ids.append({f.track_id for f in faces if f.box[0] < 480})
            detected.append(tracker.last_was_detection)
            threading.Event().wait(1 / 30)  # a live stream's pace: the worker's HOG runs between frames
    finally:
        tracker.close()
        assert tracker.join(5.0)
    first = next(i for i, n in enumerate(counts) if n == 2)
    print(f"\nsecond face tracked from frame {first} (in view from {appears}); faces per frame {counts}")
    assert detected[0] and not any(detected[1:]), detected  # only the first search ran on a frame
    assert all(n == 1 for n in counts[:appears]), counts
    assert appears <= first <= appears + cfg.detect_every + 10, counts
    assert all(n == 2 for n in counts[first:]), counts
    assert all(s == ids[0] and len(s) == 1 for s in ids), ids  # the left face kept its one track throughout


def test_a_stream_that_changes_size_is_searched_again_at_once(shared_data: Path) -> None:
    """A sender on a slow link may halve its picture (libwebrtc does) from one frame to the next: the
    tracks' pixels then mean nothing, so the tracker searches that very frame and the face is found
    where it now is (before, that frame tracked old pixels, lost the face and went out as received)."""
    from enhancer.detect import detect_faces

    clip = decode(shared_data / "videos" / "LivePortrait__assets__examples__driving__d6.mp4")
    frames = [cv2.resize(frame, (640, 480)) for frame, _ in (next(clip) for _ in range(16))]
    tracker = FaceTracker(TrackerConfig())
    for i, f in enumerate(frames):
        img = f if i < 8 else cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)
        faces = tracker.update(img, i / 30)
        assert len(faces) == 1, i
        if i in (7, 8, 15):
            truth = detect_faces(img, upsample=1)[0].landmarks.mean(0)
            assert np.linalg.norm(faces[0].landmarks.mean(0) - truth) < 0.02 * img.shape[1], i
        assert tracker.last_was_detection == (i in (0, 8) or i % 10 == 0), i
