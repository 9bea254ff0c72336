"""Per-preset tables of training (output-term weights, degraded copies per photo in a pack) and
the margin's anchors, kept free of torch so the CLI can show its choices and defaults without
importing the training stack."""

from __future__ import annotations

import numpy as np

# default per-preset multiplier of the output identity term (stage 5): sharp crops need no identity help
ID_OUTPUT_WEIGHTS: tuple[tuple[str, float], ...] = (("severe", 1.0), ("moderate", 0.5), ("mild", 0.0))

# what the margin term measures nearness to (``loss.identity_margin``): the clean target photo
# (the eval's own question) or the person's references
MARGIN_ANCHORS: tuple[str, ...] = ("target", "references")


def check_margin_anchor(anchor: str) -> None:
    if anchor not in MARGIN_ANCHORS:
        raise ValueError(f"margin_anchor must be one of {MARGIN_ANCHORS}, not {anchor!r}")


# (preset, degraded copies) stored per photo in a pack; severe is the product's hard case, so it gets two.
POOL_VARIANTS: tuple[tuple[str, int], ...] = (("severe", 2), ("moderate", 1), ("mild", 1))


def format_preset_weights(table: tuple[tuple[str, float], ...] | tuple[tuple[str, int], ...]) -> str:
    """(("severe", 1.0), ("mild", 0.0)) -> "severe=1,mild=0" (the CLI's spelling)."""
    return ",".join(f"{name}={w:g}" for name, w in table)


def preset_weights(presets: list[str], variant: np.ndarray, table: tuple[tuple[str, float], ...]) -> np.ndarray:
    """Per-sample multiplier from each sample's degradation preset (unnamed presets: 1); a call
    variant of a preset (``call-severe``) takes the preset's multiplier."""
    from ..degrade import CALL_PREFIX

    w = dict(table)
    return np.array([w.get(presets[v].removeprefix(CALL_PREFIX), 1.0) for v in variant], np.float32)


# How references are mirrored. "with-target": each reference is flipped exactly when its target is,
# so the whole sample is one consistent mirror image. "independent" (stages 1-9): each reference
# flipped by its own coin, which feeds the position-by-position identity map half-mirrored faces,
# a left-right symmetrised map the product never sees (enrolment and the eval never flip).
REF_FLIPS = ("with-target", "independent")


def check_ref_flip(mode: str) -> None:
    if mode not in REF_FLIPS:
        raise ValueError(f"ref_flip must be one of {', '.join(REF_FLIPS)}, not {mode!r}")
