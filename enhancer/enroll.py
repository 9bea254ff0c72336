"""Enrolment: turn a few photos, a clip or a camera capture into a stored identity.

The identity encoder is only as good as its references, so every candidate image is
checked first and each rejection is reported with its reason:

- exactly one face (``detect_faces``; retried with 2x upsampling so a small face is reported
  as small rather than missing). Several faces are refused: we cannot know which is the user;
- face large enough: eye-centre distance >= ``min_eye_distance`` px (default 40). The
  encoder's 128-px aligned crop puts the eye centres 38.4 px apart, so below ~40 px the
  reference would be upsampled, i.e. invented detail;
- sharp enough: variance of the Laplacian of the aligned 128-px crop's gray >= ``min_sharpness``
  (default 40). Measured on real data (see the module's measurements in ``SHARPNESS_NOTE``);
- roughly frontal, from the 5 landmarks: ``yaw`` is the nose base's offset from the
  eye-centre midline along the eye line, divided by the eye distance (0 frontal; sign = turn
  direction); ``roll`` is the eye line's angle. Defaults |yaw| <= 0.25, |roll| <= 20 deg.
  On ~880 CelebA photos |yaw| > 0.25 for 5 % (looked at: clear three-quarter views from
  ~0.25 on, 0.15-0.2 is a slight turn) and |roll| > 20 deg for 0.7 % (strongly tilted heads);
  on 33 talking-head clips the largest |yaw| was 0.11 and |roll| 13 deg. Roll itself is undone
  by alignment; a large one flags unusual photos and less reliable landmarks.

Eye distance, for reference: CelebA loose crops p5 38.5 / p50 43.5 px (about 12 % fall under
40 px), in-the-wild photos p50 52 px, talking-head clips 60-180 px.

At least ``min_accepted`` (default 3) must pass. At most 8 references are used (the
encoder's maximum): among comparably sharp accepted images, greedy farthest-point selection on
aligned landmark layouts, starting from the sharpest, so the set covers varied poses
(see :func:`select_references`).
The identity is computed once (one masked set through the encoder) and stored by
:mod:`enhancer.identity_store`; nothing leaves the machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import cv2
import numpy as np

from .align import alignment_matrix, transform_points, warp_crops
from .detect import detect_faces
from .errors import InputError
from .identity_store import CAMERA_SOURCE, KEEP_SIZE, VIDEO_SOURCE, IdentityStore, validate_name
from .imageio import read_image, to_bgr

CHECK_SIZE = 128  # aligned crop side on which sharpness is measured (thresholds assume it)

SHARPNESS_NOTE = """\
Variance of the Laplacian on the aligned 128-px gray crop. Sample: 300 CelebA loose crops,
195 CelebA in-the-wild photos (degraded copies keep the original's landmarks), 395 frames
from the 33 talking-head clips (12 per clip).
                               p1    p5    p50   below 40
  CelebA crops, original       54    76    217     0.3 %
  CelebA wild, original        74    98    571     0   %
  video frames (all clips)     67   113    300     0   %  (min 62)
  crops, Gaussian blur s=1     21    28     56    22   %
  crops, Gaussian blur s=2    7.8   9.5     17    99   %
  crops, Gaussian blur s=6    2.6   2.9    3.8   100   %  (wild: 100 %, p99 17)
  crops, 4x down/up-scaled     13    16     29    81   %
  crops, 'moderate' preset      -     -  20-30    84   %
  crops, 'severe' preset        -     -  < 20     99   %
  crops, JPEG quality 10       75   110    214     0   %  (blocking adds edges: not caught)
So 40 keeps essentially every real photo and frame and rejects clearly blurred ones."""


@dataclass(frozen=True)
class EnrollConfig:
    """Thresholds for candidate images; defaults measured on real data (module docstring)."""

    min_eye_distance: float = 40.0  # px between eye centres in the source image
    min_sharpness: float = 40.0  # Laplacian variance of the aligned 128-px gray crop
    max_yaw: float = 0.25  # |nose offset from eye midline| / eye distance
    max_roll: float = 20.0  # degrees of eye-line tilt
    min_accepted: int = 3
    max_refs: int = 8  # further capped by the encoder's max_refs
    video_samples: int = 48  # frames examined, spread evenly over a clip
    camera_seconds: float = 6.0
    max_side: int = 800  # detector input side (see detect_faces)
    # also store the aligned references at the model's size, for reference detail transfer
    # (enhancer/detail_transfer.py): the face keeps this person's own detail, at the price of
    # small face crops in the (local, 0600) identity file
    reference_detail: bool = True

    def check(self) -> None:
        if self.min_accepted < 1:
            raise InputError(f"--min-accepted must be >= 1 (got {self.min_accepted})")
        if self.max_refs < 1:
            raise InputError(f"max references must be >= 1 (got {self.max_refs})")
        if self.min_accepted > self.max_refs:
            raise InputError(f"--min-accepted {self.min_accepted} exceeds the {self.max_refs} references used")
        if self.video_samples < 1:
            raise InputError(f"--samples must be >= 1 (got {self.video_samples})")


@dataclass
class Candidate:
    """One examined image or frame: the verdict, the measurements behind it and the crops."""

    source: str
    accepted: bool = False
    reason: str = ""
    eye_distance: float | None = None
    sharpness: float | None = None
    yaw: float | None = None
    roll: float | None = None
    used: bool = False
    layout: np.ndarray | None = field(default=None, repr=False)  # aligned landmarks / CHECK_SIZE
    crops: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # side -> aligned crop (accepted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no pixels)."""
        r = lambda v, n: None if v is None else round(float(v), n)  # noqa: E731
        return {"source": self.source, "accepted": self.accepted, "used": self.used, "reason": self.reason,
                "eye_distance": r(self.eye_distance, 1), "sharpness": r(self.sharpness, 1),
                "yaw": r(self.yaw, 3), "roll": r(self.roll, 1)}


class EnrollmentError(InputError):
    """Too few usable images; ``report`` holds the per-image verdicts for display."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def face_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(eye distance px, yaw ratio, roll degrees) from dlib's 5 points.

    Points 0-1 are the image-right eye's corners, 2-3 the image-left eye's, 4 the nose base.
    Yaw: the nose base's offset along the eye line from the eye-centre midpoint, over the eye
    distance; its sign says which way the head is turned.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    right, left = (lm[0] + lm[1]) / 2, (lm[2] + lm[3]) / 2
    v = right - left
    ed = float(np.linalg.norm(v))
    if ed < 1e-6:
        return 0.0, 0.0, 0.0
    u = v / ed
    yaw = float(np.dot(lm[4] - (right + left) / 2, u) / ed)
    roll = float(np.degrees(np.arctan2(v[1], v[0])))
    return ed, yaw, roll


def sharpness(crop_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the crop's gray: low for blurred or upscaled faces."""
    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY) if crop_bgr.ndim == 3 else crop_bgr
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def check_image(img: np.ndarray, source: str, cfg: EnrollConfig, sizes: Iterable[int] = ()) -> Candidate:
    """Run every check on one BGR image; the candidate says accepted or why not.

    An accepted candidate keeps aligned crops at ``sizes`` (not the frame), so scanning a
    long clip holds a few small crops instead of full frames.
    """
    c = Candidate(source)
    try:
        img = to_bgr(img, source)
    except InputError as e:
        c.reason = f"unreadable ({e})"
        return c
    dets = detect_faces(img, max_side=cfg.max_side) or detect_faces(img, max_side=cfg.max_side, upsample=1)
    if not dets:
        c.reason = "no face found"
        return c
    if len(dets) > 1:
        c.reason = f"several faces ({len(dets)}); use photos showing only you"
        return c
    lm = dets[0].landmarks
    c.eye_distance, c.yaw, c.roll = face_pose(lm)
    m = alignment_matrix(lm, CHECK_SIZE)
    c.layout = (transform_points(m, lm) / CHECK_SIZE).reshape(-1)
    crop = warp_crops(img, m[None], CHECK_SIZE)[0]
    c.sharpness = sharpness(crop)
    if c.eye_distance < cfg.min_eye_distance:
        c.reason = f"face too small (eye distance {c.eye_distance:.0f} px < {cfg.min_eye_distance:.0f} px)"
    elif abs(c.roll) > cfg.max_roll:
        c.reason = f"head tilted ({abs(c.roll):.0f} deg > {cfg.max_roll:.0f} deg)"
    elif abs(c.yaw) > cfg.max_yaw:
        c.reason = f"head turned, not frontal (yaw {abs(c.yaw):.2f} > {cfg.max_yaw:.2f})"
    elif c.sharpness < cfg.min_sharpness:
        c.reason = f"too blurry (sharpness {c.sharpness:.0f} < {cfg.min_sharpness:.0f})"
    else:
        c.accepted = True
        c.reason = "ok"
        c.crops = {s: crop if s == CHECK_SIZE else warp_crops(img, alignment_matrix(lm, s)[None], s)[0]
                   for s in sizes}
    return c


def select_references(cands: list[Candidate], k: int) -> list[Candidate]:
    """The sharpest varied ``k`` accepted candidates.

    The pool is every accepted candidate at least half as sharp as the k-th sharpest (small
    sharpness differences between good frames mean nothing; large ones do), then greedy
    farthest-point on aligned landmark layouts starting from the sharpest, so near-duplicate
    poses (consecutive frames) are not all picked.
    """
    ok = sorted((c for c in cands if c.accepted), key=lambda c: -(c.sharpness or 0.0))
    if len(ok) <= k:
        return ok
    floor = 0.5 * (ok[k - 1].sharpness or 0.0)
    pool = [c for c in ok if (c.sharpness or 0.0) >= floor]
    pts = np.stack([c.layout for c in pool])
    chosen = [0]
    dist = np.linalg.norm(pts - pts[0], axis=1)
    while len(chosen) < k:
        dist[chosen] = -1.0
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[i], axis=1))
    return [pool[i] for i in chosen]


@dataclass
class _Session:
    """Everything fixed before images are examined: name, store, model, thresholds."""

    name: str
    store: IdentityStore
    cfg: EnrollConfig
    model: Any
    meta: dict
    force: bool
    keep_photos: bool
    on_candidate: Callable[[Candidate], None] | None

    def sizes(self) -> tuple[int, ...]:
        """Crop sides to keep per accepted image: the encoder's, and the kept-photo size."""
        return (self.model.cfg.encoder.size,) + ((KEEP_SIZE,) if self.keep_photos else ())

    def examine(self, items: Iterable[tuple[str, np.ndarray | None, str]]) -> list[Candidate]:
        """Check (source, image or None, reason-if-None) items, reporting each verdict."""
        out = []
        for source, img, err in items:
            c = Candidate(source, reason=err) if img is None else check_image(img, source, self.cfg, self.sizes())
            out.append(c)
            if self.on_candidate:
                self.on_candidate(c)
        return out


class EnrollOptions(TypedDict, total=False):
    """What every ``enroll_from_*`` entry point takes besides its source (all optional):
    ``config`` (checks, default ``EnrollConfig()``), ``weights`` (default: the packaged student),
    ``keep_photos`` (also store 256-px aligned crops), ``force`` (replace an existing identity),
    ``home`` (overrides ``$LIKENESS_HOME``), ``on_candidate`` (called with each verdict)."""

    config: EnrollConfig | None
    weights: Path | str | None
    keep_photos: bool
    force: bool
    home: Path | str | None
    on_candidate: Callable[[Candidate], None] | None


def _start(name: str, opts: EnrollOptions) -> _Session:
    """Fail fast (bad name, existing identity, missing weights) before any slow scanning."""
    from .weights import load_restorer

    unknown = set(opts) - set(EnrollOptions.__annotations__)
    if unknown:  # a TypedDict does not check at run time; a misspelt option must not be ignored
        raise TypeError(f"unknown enrolment options: {', '.join(sorted(unknown))}")
    validate_name(name)
    cfg = opts.get("config") or EnrollConfig()
    cfg.check()
    store = IdentityStore(opts.get("home"))
    force = bool(opts.get("force", False))
    if not force and store.exists(name):
        raise InputError(f"identity {name!r} already exists ({store.path(name)}); use --force to replace it")
    weights = opts.get("weights")
    model, meta = load_restorer(Path(weights) if weights else None, kind="student")
    return _Session(name, store, cfg, model, meta, force, bool(opts.get("keep_photos", False)),
                    opts.get("on_candidate"))


def _finish(s: _Session, cands: list[Candidate], source: str) -> dict[str, Any]:
    """Select references, encode, store; or raise ``EnrollmentError`` with the report."""
    from .weights import compute_identity

    k = min(s.cfg.max_refs, s.model.cfg.encoder.max_refs)
    accepted = [c for c in cands if c.accepted]
    report: dict[str, Any] = {"name": s.name, "source": source, "path": None, "n_refs": 0,
                              "examined": len(cands), "accepted": len(accepted),
                              "rejected": len(cands) - len(accepted), "images": []}
    if len(accepted) < s.cfg.min_accepted:
        report["images"] = [c.to_dict() for c in cands]
        why = Counter(c.reason.split(" (")[0].split(";")[0] for c in cands if not c.accepted)
        summary = ", ".join(f"{n}x {r}" for r, n in why.most_common())
        raise EnrollmentError(f"only {len(accepted)} of {len(cands)} {source} passed the checks, need at least "
                              f"{s.cfg.min_accepted}" + (f" (rejected: {summary})" if summary else "")
                              + f"; nothing was stored for {s.name!r}", report)
    chosen = select_references(cands, k)
    for c in chosen:
        c.used = True
    aligned = np.stack([c.crops[s.model.cfg.encoder.size] for c in chosen])
    ident = compute_identity(s.model, aligned)
    refs = np.stack([c.crops[KEEP_SIZE] for c in chosen]) if s.keep_photos else None
    detail = aligned if s.cfg.reference_detail else None
    path = s.store.save(s.name, ident, encoder_id=s.meta["encoder_id"], model_id=s.meta["model_id"],
                        n_refs=len(chosen), refs=refs, detail=detail, source=source, force=s.force)
    report.update(path=str(path), n_refs=len(chosen), encoder_id=s.meta["encoder_id"],
                  model_id=s.meta["model_id"], photos_kept=s.keep_photos, reference_detail=detail is not None,
                  images=[c.to_dict() for c in cands])
    return report


def enroll_from_images(name: str, images_bgr: list[np.ndarray], *, labels: list[str] | None = None,
                       source: str = "images", **opts: Unpack[EnrollOptions]) -> dict[str, Any]:
    """Enroll ``name`` from decoded BGR images (the web bridge's entry point; ``source`` is stored with
    the identity: ``CAMERA_SOURCE`` for the page's webcam capture, which sets the detail transfer's dial).

    Returns the report: per-image verdicts with reasons (``images``), the stored ``path``
    and ``n_refs``. Raises ``EnrollmentError`` (too few usable images; nothing stored, the
    report is attached), ``InputError`` (bad name; identity exists and not ``force``) or
    ``ModelError`` (weights missing or broken). ``home`` overrides ``$LIKENESS_HOME``.
    """
    labels = labels or [f"image {i + 1}" for i in range(len(images_bgr))]
    if len(labels) != len(images_bgr):
        raise InputError(f"{len(labels)} labels for {len(images_bgr)} images")
    s = _start(name, opts)
    cands = s.examine((lab, img, "") for lab, img in zip(labels, images_bgr, strict=True))
    return _finish(s, cands, source)


def _read_paths(paths: list[Path]) -> Iterator[tuple[str, np.ndarray | None, str]]:
    for p in paths:
        try:
            yield str(p), read_image(p), ""
        except InputError as e:
            yield str(p), None, f"unreadable: {e}"


def enroll_from_paths(name: str, paths: list[Path | str], **opts: Unpack[EnrollOptions]) -> dict[str, Any]:
    """Enroll from image files; an unreadable file is a rejected candidate, not fatal."""
    if not paths:
        raise InputError("no photos given")
    s = _start(name, opts)
    cands = s.examine(_read_paths([Path(p) for p in paths]))
    return _finish(s, cands, "photos")


def enroll_from_video(name: str, video: Path | str, *, progress: bool = True,
                      **opts: Unpack[EnrollOptions]) -> dict[str, Any]:
    """Enroll from frames sampled evenly over a clip (same checks; varied sharp frames chosen)."""
    s = _start(name, opts)
    from .video_io import sample_video_frames

    frames = sample_video_frames(video, s.cfg.video_samples, progress)
    cands = s.examine((f"frame {i}", img, "") for i, img in frames)
    return _finish(s, cands, VIDEO_SOURCE)


def enroll_from_camera(name: str, index: int = 0, *, on_open: Callable[[], None] | None = None,
                       **opts: Unpack[EnrollOptions]) -> dict[str, Any]:
    """Enroll from a short live capture: look at the camera and turn your head a little."""
    s = _start(name, opts)
    from .video_io import capture_camera

    frames = capture_camera(index, s.cfg.camera_seconds, s.cfg.video_samples, on_open)
    cands = s.examine((f"camera frame {i}", img, "") for i, img in frames)
    return _finish(s, cands, CAMERA_SOURCE)
