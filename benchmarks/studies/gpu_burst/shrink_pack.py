"""Re-encode a training pack's clean (HQ) crops at a lower WebP quality so the pack fits the
GPU machine's 64 MiB carry beside the repository. Why HQ only: the degraded (LQ) images keep
their exact bytes, so the codec artefacts the model learns to undo are the real ones; the clean
targets lose ~1 dB at 37-39 dB, far above any restoration's error (23-30 dB).

Usage: python benchmarks/studies/gpu_burst/shrink_pack.py PACK PREPARED_DIR OUT --quality 82
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from enhancer.training.data import concat_blobs, load_prepared


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pack", type=Path)
    ap.add_argument("prepared", type=Path, help="the `likeness data prepare` folder the pack was built from")
    ap.add_argument("out", type=Path)
    ap.add_argument("--quality", type=int, default=82)
    a = ap.parse_args()
    z = dict(np.load(a.pack, allow_pickle=False))
    rows = load_prepared(a.prepared)
    ids = [str(s) for s in z["identities"]]
    if len(rows) != len(z["labels"]) or any(ids[lab] != r[1] for lab, r in zip(z["labels"], rows, strict=True)):
        raise SystemExit(f"{a.prepared} does not match {a.pack} row for row")
    blobs, err = [], []
    for n, (path, _) in enumerate(rows):
        img = cv2.imread(path)
        ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, a.quality])
        assert ok
        blobs.append(buf.tobytes())
        if n % 25 == 0:
            err.append(float(((cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) - img) ** 2).mean()))
    z["hq_data"], z["hq_off"] = concat_blobs(blobs)
    np.savez(a.out, **z)
    print(f"{a.out}: {a.out.stat().st_size / 2**20:.1f} MiB; HQ {z['hq_data'].nbytes / 2**20:.1f} MiB, "
          f"PSNR of re-encoded HQ vs source {10 * np.log10(255**2 / np.mean(err)):.1f} dB")


if __name__ == "__main__":
    main()
