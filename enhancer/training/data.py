"""Training data: identity split, a packed pool of degraded crops, and on-device batching.

Codec round trips cost ~2 ms each on the CPU, too slow to run per sample when a GPU trains
at thousands of samples per second. So ``build_pack`` degrades every aligned crop a few times
with the real presets (H.264/VP8 through PyAV, seeded) and stores HQ crops and small LQ
images as WebP bytes in one ``.npz`` (plain arrays: loads without pickle). Training decodes
the pack once into uint8 tensors on the training device and samples from that pool, adding
fresh flips each step. The pack records which preset made each LQ variant (``Pool.presets``),
so a loss can be weighted by degradation.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import InputError
from .preset_weights import POOL_VARIANTS, check_ref_flip


def load_prepared(prepared: Path) -> list[tuple[str, str]]:
    """(absolute crop path, identity) rows of a `likeness data prepare` output folder."""
    f = Path(prepared) / "labels.csv"
    if not f.is_file():
        raise InputError(f"{prepared}: no labels.csv; run `likeness data prepare` first")
    with f.open(newline="") as fh:
        return [(str(Path(prepared) / r["path"]), r["identity"]) for r in csv.DictReader(fh)]


def split_identities(identities: list[str], n_val: int, seed: int = 0, min_images: dict | None = None,
                     need: int = 5) -> tuple[list[str], list[str]]:
    """Deterministic hash split: ``n_val`` validation identities among those with >= ``need``
    images (so eval has 4 references and >= 1 test photo); the rest train."""
    def key(i: str) -> str:
        return hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()

    ids = sorted(set(identities), key=key)
    eligible = [i for i in ids if min_images is None or min_images.get(i, 0) >= need]
    val = sorted(eligible[:n_val])
    vs = set(val)
    return sorted(i for i in ids if i not in vs), val


def prepare_split(pack: Path, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) identities of a pack: every trainer splits the same way, so val people stay unseen."""
    z = np.load(pack, allow_pickle=False)
    ids = [str(s) for s in z["identities"]]
    counts = Counter(ids[i] for i in z["labels"])
    return split_identities(ids, n_val, seed, counts)


def _encode(img: np.ndarray, lossless: bool) -> bytes:
    q = 101 if lossless else 95
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, q])
    assert ok
    return buf.tobytes()


def _pack_one(args) -> tuple[bytes, list[bytes]]:
    from ..degrade import CALL_PREFIX, degrade_call, degrade_small  # PyAV: only to build packs, not to train

    path, seed, variants = args
    img = cv2.imread(path)
    hq = _encode(img, lossless=False)
    lqs = []
    rng = np.random.default_rng(seed)
    for preset, n in variants:
        for _ in range(n):
            if preset.startswith(CALL_PREFIX):  # stored at full size: its scale is not the preset's
                lqs.append(_encode(degrade_call(img, preset.removeprefix(CALL_PREFIX), rng), lossless=False))
            else:
                lqs.append(_encode(degrade_small(img, preset, rng), lossless=False))
    return hq, lqs


def concat_blobs(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Encoded images end to end plus offsets: a pack is plain arrays, loadable without pickle."""
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def build_pack(prepared: Path, out: Path, seed: int = 0, workers: int = 2,
               variants: tuple[tuple[str, int], ...] = POOL_VARIANTS) -> dict:
    """More variants per image mean more distinct degradations of each photo over a long run (the
    generator otherwise sees the same few codec artefacts of a photo dozens of times). A variant
    ``call-PRESET`` degrades the face as a call degrades the frame around it (``degrade_call``)."""
    from ..degrade import CALL_PREFIX, PRESETS

    if not variants or any(p.removeprefix(CALL_PREFIX) not in PRESETS or n < 1 for p, n in variants):
        raise InputError(f"pack variants {variants}: want PRESET=N with N >= 1 (presets: {', '.join(PRESETS)}, "
                         f"each also as {CALL_PREFIX}PRESET)")
    rows = load_prepared(prepared)
    ids = sorted({r[1] for r in rows})
    id_index = {i: n for n, i in enumerate(ids)}
    args = [(p, seed * 1_000_003 + n, variants) for n, (p, _) in enumerate(rows)]
    with ProcessPoolExecutor(workers) as ex:
        res = list(tqdm(ex.map(_pack_one, args, chunksize=32), total=len(args), desc="pack", unit="img"))
    hq_data, hq_off = concat_blobs([r[0] for r in res])
    lq_blobs = [b for r in res for b in r[1]]
    lq_data, lq_off = concat_blobs(lq_blobs)
    names = [f"{p}:{n}" for p, n in variants]
    np.savez(
        out,
        hq_data=hq_data, hq_off=hq_off, lq_data=lq_data, lq_off=lq_off,
        labels=np.array([id_index[r[1]] for r in rows], np.int32),
        identities=np.array(ids), variants=np.array(names),
        scales=np.array([1.0 if p.startswith(CALL_PREFIX) else PRESETS[p].scale for p, n in variants
                         for _ in range(n)], np.float32),
    )
    return {"images": len(rows), "identities": len(ids), "variants_per_image": len(lq_blobs) // len(rows),
            "bytes": int(Path(out).stat().st_size)}


@dataclass
class Pool:
    """Decoded pack on a device: HQ (N,3,S,S) uint8, LQ list per variant of (N,3,s,s) uint8."""

    hq: torch.Tensor
    lq: list[torch.Tensor]
    labels: np.ndarray
    identities: list[str]
    presets: list[str]  # degradation preset of each LQ variant (``lq[v]`` came from ``presets[v]``)


def _decode_many(data: np.ndarray, off: np.ndarray, idx: list[int]) -> list[np.ndarray]:
    def dec(i: int) -> np.ndarray:
        return cv2.imdecode(data[off[i]:off[i + 1]], cv2.IMREAD_COLOR)

    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(dec, idx))


def load_pack(path: Path, device: torch.device, keep: set[str] | None = None) -> Pool:
    """Decode the pack; ``keep`` restricts to those identities (e.g. the training split)."""
    z = np.load(path, allow_pickle=False)
    identities = [str(s) for s in z["identities"]]
    labels = z["labels"]
    sel = [i for i in range(len(labels)) if keep is None or identities[labels[i]] in keep]
    hq = np.stack(_decode_many(z["hq_data"], z["hq_off"], sel))
    nvar = len(z["scales"])
    lq_imgs = _decode_many(z["lq_data"], z["lq_off"], [i * nvar + v for i in sel for v in range(nvar)])
    lq = []
    for v in range(nvar):
        arr = np.stack(lq_imgs[v::nvar])
        lq.append(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device))
    presets = [str(name).split(":")[0] for name in z["variants"] for _ in range(int(str(name).split(":")[1]))]
    if len(presets) != nvar:
        raise InputError(f"{path}: variant names {list(z['variants'])} do not match {nvar} LQ variants")
    return Pool(torch.from_numpy(hq).permute(0, 3, 1, 2).contiguous().to(device), lq, labels[sel], identities,
                presets)


class RefSampler:
    """Draws (target, K references of the same identity, never the target) batches on device."""

    def __init__(self, pool: Pool, max_refs: int, seed: int, ref_flip: str = "with-target",
                 self_ref: float = 0.0) -> None:
        check_ref_flip(ref_flip)
        self.pool = pool
        self.max_refs = max_refs
        self.ref_flip = ref_flip
        # share of samples whose first reference is the target itself (a diagnostic: can the
        # generator use references that do explain the target? 0 in every shipped model)
        self.self_ref = self_ref
        by_id: dict[int, list[int]] = defaultdict(list)
        for n, lab in enumerate(pool.labels):
            by_id[int(lab)].append(n)
        self.by_id = {k: np.array(v) for k, v in by_id.items() if len(v) >= 2}
        self.targets = np.concatenate(list(self.by_id.values()))
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, s: dict) -> None:
        self.rng.bit_generator.state = s

    def sample(self, batch: int, k_range: tuple[int, int] = (1, 5)):
        rng = self.rng
        tgt = rng.choice(self.targets, batch)
        refs = np.zeros((batch, self.max_refs), np.int64)
        mask = np.zeros((batch, self.max_refs), bool)
        for b, t in enumerate(tgt):
            pool = self.by_id[int(self.pool.labels[t])]
            others = pool[pool != t]
            k = min(int(rng.integers(k_range[0], k_range[1] + 1)), len(others))
            pick = rng.choice(others, k, replace=False)
            refs[b, :k] = pick
            mask[b, :k] = True
        if self.self_ref > 0:  # drawn only when asked, so the default keeps the old RNG stream
            own = rng.random(batch) < self.self_ref
            refs[own, 0] = tgt[own]
        variant = rng.integers(0, len(self.pool.lq), batch)
        flip = rng.random(batch) < 0.5
        ref_flip = rng.random((batch, self.max_refs)) < 0.5  # drawn either way: one RNG stream
        if self.ref_flip == "with-target":
            ref_flip = np.repeat(flip[:, None], self.max_refs, axis=1)
        return tgt, refs, mask, variant, flip, ref_flip


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 BGR (…,3,H,W) -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def make_batch(pool: Pool, draw, size: int, device: torch.device):
    """Turn sampler indices into tensors: x0, lq (bicubic-upsampled), refs, mask."""
    tgt, refs, mask, variant, flip, ref_flip = draw
    t_idx = torch.as_tensor(tgt, device=device)
    x0 = to_unit(pool.hq[t_idx])
    lq = torch.empty_like(x0)
    for v in range(len(pool.lq)):
        sel = np.nonzero(variant == v)[0]
        if len(sel) == 0:
            continue
        small = to_unit(pool.lq[v][torch.as_tensor(tgt[sel], device=device)])
        lq[torch.as_tensor(sel, device=device)] = F.interpolate(small, size=(size, size), mode="bicubic",
                                                                align_corners=False).clamp(-1, 1)
    fl = torch.as_tensor(flip, device=device)[:, None, None, None]
    x0 = torch.where(fl, x0.flip(-1), x0)
    lq = torch.where(fl, lq.flip(-1), lq)
    r = to_unit(pool.hq[torch.as_tensor(refs, device=device)])  # (B,K,3,S,S)
    rf = torch.as_tensor(ref_flip, device=device)[:, :, None, None, None]
    r = torch.where(rf, r.flip(-1), r)
    return x0, lq, r, torch.as_tensor(mask, device=device)


STARVE_SIDE = 16  # a 16-pixel face: outline and colours survive, eyes and mouth are a pixel or two


def starve_input(lq: torch.Tensor, which: torch.Tensor, side: int = STARVE_SIDE) -> torch.Tensor:
    """The rows ``which`` (B,) bool of ``lq`` brought down to ``side`` pixels (area) and back up
    (bicubic); others untouched. Why: with the input this uninformative, only the references can
    say what the eyes, nose and mouth look like, so training rewards taking that from them far more
    than ordinary degradations do, where the blurry input already explains most of the face."""
    size = lq.shape[-1]
    small = F.interpolate(lq, size=(side, side), mode="area")
    starved = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.where(which.to(lq.device)[:, None, None, None], starved, lq)
