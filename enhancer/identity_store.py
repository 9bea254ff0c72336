"""Enrolled identities on disk: one small safetensors file per person, private to the user.

An identity is biometric data. It is computed locally, stored only under
``$LIKENESS_HOME/identities/NAME.safetensors`` (file mode 0600, folder 0700) and never sent
anywhere by this module. Files are safetensors (never pickle), so loading one cannot run code.

File layout (format version 1):

- tensor ``identity``: (5, 256) float32, the encoder's global vector and 4 identity tokens, then
  for an encoder with a spatial identity map its side x side rows ((5 + side**2, 256)), and for one
  with a fine map (side 32) its 16x16 space-to-depth rows after those;
- tensor ``detail`` (identities enrolled since reference detail transfer): (K, S, S, 3) uint8, the
  aligned reference crops at the model's crop size (S = 128), whose fine detail the pipeline adds
  where it matches the restored face (enhancer/detail_transfer.py); without it the face is
  restored without transfer;
- tensor ``refs`` (only with ``--keep-photos``): (K, 256, 256, 3) uint8 aligned BGR crops, so
  the person can be re-enrolled for a future encoder without new photos;
- metadata: ``format``, ``version``, ``name``, ``encoder_id``, ``model_id``, ``created``
  (ISO 8601 UTC), ``n_refs``, ``source`` (what it was enrolled from: ``images``, ``photos``, or
  video: ``VIDEO_SOURCE``, ``CAMERA_SOURCE``).

An identity is only meaningful to the encoder that made it, so ``load`` refuses a file whose
``encoder_id`` differs from the running model's (the teacher and its distilled student share
an encoder, hence an ``encoder_id``).

Sharing, by consent (``likeness call --share-identity``): ``shared_bytes`` is the same file format
without the kept photos, and ``parse_identity`` validates such bytes in memory, so a receiver
never has to write someone else's identity to disk to check it. Everything read back is validated (size, header, tensor
names, shapes, dtypes, finiteness) because the file may have been truncated or tampered with.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import InputError, ModelError

FORMAT = "likeness-identity"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"
IDENTITY_SHAPE = (5, 256)  # without a spatial map
SPATIAL_SIDES = (0, 8, 16)  # spatial identity map sides a stored identity may carry (EncoderConfig.spatial)
FINE_SIDES = (0, 32)  # fine map sides (EncoderConfig.spatial_fine), stored as (side/2)**2 rows
# rows of per-reference keys and values (EncoderConfig.ref_rows: 4 slots, 16 wide at 32x32 and 32 wide
# at 16x16 -> 4 * 2 * (16 * 32**2 + 32 * 16**2) / 256 = 768)
REF_ROWS = (0, 768)
KEEP_SIZE = 256  # side of the aligned crops stored with --keep-photos
MAX_KEPT_REFS = 8
# an identity alone is ~5 kB (~270 kB with a 16x16 map, ~530 kB with both maps, ~1.05 MB with a 16x16
# map and reference keys/values); 2 MB is not ours
MAX_FILE_BYTES = 2_000_000
MAX_FILE_BYTES_WITH_REFS = MAX_FILE_BYTES + MAX_KEPT_REFS * KEEP_SIZE * KEEP_SIZE * 3
VIDEO_SOURCE = "frames"  # enrolled from a video file
CAMERA_SOURCE = "camera frames"  # from a webcam: `likeness enroll --camera`, the page's capture
FROM_VIDEO = frozenset({VIDEO_SOURCE, CAMERA_SOURCE})
NAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$")
REQUIRED_META = ("format", "version", "name", "encoder_id", "model_id", "created", "n_refs")


def likeness_home() -> Path:
    """``$LIKENESS_HOME``, else the user's data dir (``$XDG_DATA_HOME/likeness`` or
    ``~/.local/share/likeness``): identities are user data, not cache or config."""
    env = os.environ.get("LIKENESS_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "likeness"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe file stem, else raise ``InputError`` saying why.

    Names become file names, so anything that could escape the identities folder or hide
    the file is refused: separators, '..', a leading '.', more than 64 characters.
    """
    if not isinstance(name, str) or not name:
        raise InputError("identity name is empty (use 1-64 letters, digits, '_', '-', '.')")
    if len(name) > 64:
        raise InputError(f"identity name is too long ({len(name)} characters, max 64)")
    if "/" in name or "\\" in name or os.sep in name:
        raise InputError(f"identity name {name!r} contains a path separator")
    if ".." in name:
        raise InputError(f"identity name {name!r} contains '..'")
    if name.startswith("."):
        raise InputError(f"identity name {name!r} starts with '.' (hidden files are not allowed)")
    if not NAME_RE.fullmatch(name):
        raise InputError(f"identity name {name!r} is invalid (use 1-64 letters, digits, '_', '-', '.')")
    return name


@dataclass(frozen=True)
class StoredIdentity:
    """A validated identity file: the tensor, its metadata and (if kept) the reference crops."""

    name: str
    path: Path | None  # None: validated from bytes in memory (a shared identity), never on disk here
    identity: np.ndarray
    metadata: dict[str, str]
    refs: np.ndarray | None
    detail: np.ndarray | None = None  # aligned reference crops at the model's size, for detail transfer


def _parse_header(data: bytes, path: Path) -> dict:
    """The safetensors JSON header, validated enough to read ``__metadata__`` safely."""
    if len(data) < 8:
        raise ModelError(f"{path}: corrupt identity file (truncated: {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > len(data) - 8:
        raise ModelError(f"{path}: corrupt identity file (not a safetensors file, or truncated)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelError(f"{path}: corrupt identity file (unreadable safetensors header)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: corrupt identity file (unreadable safetensors header)")
    return header


def valid_identity_shape(shape: tuple[int, ...]) -> bool:
    rows, dim = IDENTITY_SHAPE
    extra = {s * s + (f // 2) ** 2 + r for s in SPATIAL_SIDES for f in FINE_SIDES for r in REF_ROWS}
    return len(shape) == 2 and shape[1] == dim and shape[0] - rows in extra


def _validate(path: Path, data: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and tensors of an identity file, or ``ModelError`` naming what is wrong."""
    header = _parse_header(data, path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelError(f"{path}: corrupt identity file (bad metadata)")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a likeness identity file (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelError(f"{path}: identity file format version {meta.get('version')!r} is not supported "
                         f"(expected {FORMAT_VERSION}); re-enroll with `likeness enroll {path.stem} ...`")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ModelError(f"{path}: corrupt identity file (metadata lacks {', '.join(missing)})")
    names = set(header) - {"__metadata__"}
    if "identity" not in names or not names <= {"identity", "refs", "detail"}:
        raise ModelError(f"{path}: corrupt identity file (tensors {sorted(names)}, expected 'identity')")
    if "refs" not in names and len(data) > MAX_FILE_BYTES:
        raise ModelError(f"{path}: identity file is too large ({len(data)} bytes > {MAX_FILE_BYTES}); "
                         "it is corrupt or not an identity")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises several types for inconsistent offsets
        raise ModelError(f"{path}: corrupt identity file ({str(e).splitlines()[0][:200]})") from None
    ident = tensors["identity"]
    if ident.dtype != np.float32 or not valid_identity_shape(ident.shape):
        raise ModelError(f"{path}: corrupt identity file (identity is {ident.dtype} {tuple(ident.shape)}, "
                         f"expected float32 {IDENTITY_SHAPE} or with spatial map or reference rows)")
    if not np.isfinite(ident).all():
        raise ModelError(f"{path}: corrupt identity file (identity holds NaN or infinite values)")
    refs = tensors.get("refs")
    if refs is not None and not _valid_crops(refs):
        raise ModelError(f"{path}: corrupt identity file (kept photos are {refs.dtype} {tuple(refs.shape)})")
    detail = tensors.get("detail")
    if detail is not None and not _valid_crops(detail):
        raise ModelError(f"{path}: corrupt identity file (reference detail is {detail.dtype} {tuple(detail.shape)})")
    return meta, tensors


class IdentityMismatch(ModelError):
    """The identity was made by another encoder than the running model's: it means nothing to it."""

    def __init__(self, message: str, made_by: str, expected: str) -> None:
        super().__init__(message)
        self.made_by = made_by
        self.expected = expected


def check_encoder(stored: StoredIdentity, expected_encoder_id: str) -> np.ndarray:
    """``stored``'s identity tensor, or ``IdentityMismatch`` unless ``expected_encoder_id`` made it."""
    made_by = stored.metadata["encoder_id"]
    if made_by != expected_encoder_id:
        raise IdentityMismatch(
            f"identity {stored.name!r} was made by model {made_by} but this model's encoder is "
            f"{expected_encoder_id}; re-enroll with `likeness enroll {stored.name} --force ...`",
            made_by, expected_encoder_id)
    return stored.identity


def parse_identity(data: bytes, label: str) -> StoredIdentity:
    """Validate identity bytes in memory (a shared identity): the same checks as a stored file,
    errors naming ``label`` (no path separators: it is shown as the file's name)."""
    if len(data) > MAX_FILE_BYTES:
        raise ModelError(f"{label}: identity is too large ({len(data)} bytes > {MAX_FILE_BYTES})")
    meta, tensors = _validate(Path(label), data)
    name = meta["name"] if NAME_RE.fullmatch(meta["name"]) else "shared"
    return StoredIdentity(name, None, tensors["identity"], meta, tensors.get("refs"), tensors.get("detail"))


def shared_bytes(stored: StoredIdentity) -> bytes:
    """``stored`` in the store's file format for sharing: the identity and its reference detail, never
    the kept photos (``--keep-photos`` crops exist for re-enrolment; a receiver has no use for them)."""
    tensors = {"identity": np.ascontiguousarray(stored.identity)}
    if stored.detail is not None:
        tensors["detail"] = np.ascontiguousarray(stored.detail)
    return st_save(tensors, metadata={**stored.metadata, "photos_kept": "no"})


def _valid_crops(x: np.ndarray) -> bool:
    """(K, S, S, 3) uint8 with 1 <= K <= MAX_KEPT_REFS and S <= KEEP_SIZE."""
    return (x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3 and 1 <= x.shape[0] <= MAX_KEPT_REFS
            and x.shape[1] == x.shape[2] and 16 <= x.shape[1] <= KEEP_SIZE)


class IdentityStore:
    """The identities folder of one LIKENESS_HOME (default: :func:`likeness_home`)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else likeness_home()
        self.dir = self.home / "identities"

    def path(self, name: str) -> Path:
        return self.dir / f"{validate_name(name)}{SUFFIX}"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def _ensure_dir(self) -> None:
        """Create the folders private to the user (0700) before any biometric data lands."""
        if not self.home.exists():
            self.home.mkdir(parents=True, mode=0o700)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def save(
        self,
        name: str,
        identity: np.ndarray,
        *,
        encoder_id: str,
        model_id: str,
        n_refs: int,
        refs: np.ndarray | None = None,
        detail: np.ndarray | None = None,
        source: str = "",
        force: bool = False,
    ) -> Path:
        """Write an identity atomically (temp file + rename), mode 0600.

        Without ``force`` an existing identity is never replaced, even by a concurrent
        writer: the final step is a hard link, which fails if the name exists.
        """
        path = self.path(name)
        ident = np.ascontiguousarray(identity, dtype=np.float32)
        if not valid_identity_shape(ident.shape) or not np.isfinite(ident).all():
            raise ModelError(f"refusing to store identity {name!r}: shape {ident.shape} or non-finite values")
        if not force and path.exists():
            raise InputError(f"identity {name!r} already exists ({path}); use --force to replace it")
        tensors = {"identity": ident}
        if detail is not None:
            detail = np.ascontiguousarray(detail, dtype=np.uint8)
            if not _valid_crops(detail):
                raise ModelError(f"refusing to store identity {name!r}: reference detail of shape {detail.shape}")
            tensors["detail"] = detail
        if refs is not None:
            tensors["refs"] = np.ascontiguousarray(refs, dtype=np.uint8)
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "name": name, "encoder_id": encoder_id,
            "model_id": model_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_refs": str(int(n_refs)), "source": source, "photos_kept": "yes" if refs is not None else "no",
            "reference_detail": "yes" if detail is not None else "no",
        }
        blob = st_save(tensors, metadata=meta)
        self._ensure_dir()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.dir)  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            if force:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise InputError(f"identity {name!r} already exists ({path}); use --force to replace it") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._fsync_dir()
        return path

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def read(self, name: str) -> StoredIdentity:
        """Read and validate an identity file without checking which encoder made it."""
        path = self.path(name)
        if not path.is_file():
            raise ModelError(f"no identity named {name!r}; enroll it with `likeness enroll {name} --photos ...`")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES_WITH_REFS:
            raise ModelError(f"{path}: identity file is too large ({size} bytes); it is corrupt or not an identity")
        meta, tensors = _validate(path, path.read_bytes())
        return StoredIdentity(name, path, tensors["identity"], meta, tensors.get("refs"), tensors.get("detail"))

    def load(self, name: str, expected_encoder_id: str) -> np.ndarray:
        """The float32 identity, refused unless ``expected_encoder_id`` made it (which fixes its shape)."""
        return check_encoder(self.read(name), expected_encoder_id)

    def show(self, name: str) -> dict[str, str]:
        """Metadata of a validated identity (no tensors), plus its path and file size."""
        stored = self.read(name)
        path = self.path(name)
        info = {k: v for k, v in stored.metadata.items() if k not in ("format",)}
        info["path"] = str(path)
        info["file_bytes"] = str(path.stat().st_size)
        return info

    def list(self) -> list[dict[str, str]]:
        """One entry per identity file, sorted by name; unreadable files are listed with the
        problem instead of failing the whole listing."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob(f"*{SUFFIX}")):
            name = p.name[: -len(SUFFIX)]
            try:
                validate_name(name)
            except InputError:
                continue
            if not p.is_file():
                continue
            try:
                out.append({"name": name, **self.show(name)})
            except ModelError as e:
                out.append({"name": name, "path": str(p), "problem": str(e)})
        return out

    def remove(self, name: str) -> Path:
        """Delete an identity file (the biometric data itself, not a tombstone)."""
        path = self.path(name)
        if not path.is_file():
            raise InputError(f"no identity named {name!r} (nothing to remove in {self.dir})")
        path.unlink()
        self._fsync_dir()
        return path
