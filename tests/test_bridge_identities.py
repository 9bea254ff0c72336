"""bridge/identities.py: the bridge's only door to the identity store and enrolment.

Names, the identities folder under $LIKENESS_HOME, loading a stored identity for a call,
finding the enrolment function (or saying it is absent: the page answers 501), and turning
enrolment reports into the per-upload verdicts the page shows. Real store files and a real
enrolment on frames of a shared-data clip; nothing of the adapter is stubbed.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bridge.identities import (
    EnrollUnavailable,
    enroll_function,
    identities_dir,
    identity_path,
    list_identities,
    load_identity,
    merge_verdicts,
    report_to_json,
    valid_name,
)
from enhancer.errors import InputError, ModelError
from enhancer.identity_store import IDENTITY_SHAPE, IdentityStore, likeness_home, validate_name


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def save(store: IdentityStore, name: str, value: float) -> np.ndarray:
    ident = np.full(IDENTITY_SHAPE, value, np.float32)
    store.save(name, ident, encoder_id="enc-test", model_id="model-test", n_refs=1)
    return ident


# --- where identities live, and their names ----------------------------------------------------


def test_home_is_the_stores_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "h"))
    assert likeness_home() == tmp_path / "h" and identities_dir() == tmp_path / "h" / "identities"
    monkeypatch.delenv("LIKENESS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the store's rule: user data, not config
    assert likeness_home() == tmp_path / "xdg" / "likeness"
    assert identities_dir() == tmp_path / "xdg" / "likeness" / "identities"


@pytest.mark.parametrize("name", ["alice", "Bob_2", "a.b-c", "0", "x" * 64, "-dash", "_under"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", [None, "", ".hidden", "a/b", "a\\b", "../x", "a..b", "a b",
                                  "é", "x" * 65, "alice\n"])
def test_invalid_names(name: str | None) -> None:
    assert not valid_name(name)


@pytest.mark.parametrize("name", ["alice", "_under", "-dash", "a.b", ".hidden", "a..b", "../x", "a/b", "a\\b", "a b",
                                  "", "é", "x" * 64, "x" * 65, "alice\n", "nul\x00"])
def test_the_bridge_takes_exactly_the_names_the_store_takes(name: str) -> None:
    """One name rule: a name the store refuses (`likeness enroll` could never have made it) is refused at the
    bridge's door too, and one the store accepts is not refused by the bridge (the page can pick it)."""
    try:
        validate_name(name)
        store_takes = True
    except InputError:
        store_takes = False
    assert valid_name(name) is store_takes


def test_identity_path_is_inside_the_folder_or_refused(home: Path) -> None:
    assert identity_path("alice") == home / "identities" / "alice.safetensors"
    for bad in ("../etc/passwd", "a/b", "", ".x"):
        with pytest.raises(ModelError, match="invalid identity name"):
            identity_path(bad)


def test_list_identities_reads_only_valid_identity_files(home: Path) -> None:
    assert list_identities() == []  # no folder yet
    store = IdentityStore(home)
    save(store, "bob", 1.0)
    save(store, "alice", 2.0)
    d = home / "identities"
    (d / "notes.txt").write_text("not an identity")
    (d / "folder.safetensors").mkdir()
    (d / ".hidden.safetensors").write_bytes(b"x")
    (d / "has space.safetensors").write_bytes(b"x")
    assert list_identities() == ["alice", "bob"]  # sorted, whatever the order they were saved in


# --- loading an identity for a call ------------------------------------------------------------


def test_load_identity_reads_the_stored_tensor(home: Path) -> None:
    store = IdentityStore(home)
    alice = save(store, "alice", 0.25)
    got = load_identity("alice")
    assert got is not None and got.dtype == np.float32 and np.array_equal(got, alice)
    assert load_identity(None) is None and load_identity("") is None  # generic mode


def test_load_identity_errors_name_the_problem(home: Path) -> None:
    save(IdentityStore(home), "alice", 0.5)
    with pytest.raises(ModelError, match="no identity named 'carol'"):
        load_identity("carol")
    with pytest.raises(ModelError, match="invalid identity name"):
        load_identity("../alice")
    (home / "identities" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="corrupt identity file"):
        load_identity("broken")


# --- the enrolment function --------------------------------------------------------------------


def test_enroll_function_is_the_enrolment_code() -> None:
    from enhancer.enroll import enroll_from_images

    assert enroll_function() is enroll_from_images


def test_enroll_function_without_the_module_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "enhancer.enroll", None)  # import of it fails: not in this build
    with pytest.raises(EnrollUnavailable, match=r"no enhancer\.enroll module"):
        enroll_function()


def test_enroll_function_without_the_entry_point_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import enhancer.enroll

    monkeypatch.delattr(enhancer.enroll, "enroll_from_images")
    with pytest.raises(EnrollUnavailable, match="has no enroll_from_images"):
        enroll_function()


class _BrokenDependency(importlib.abc.MetaPathFinder):
    """Importing enhancer.enroll fails on a missing third-party module (a broken install)."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname == "enhancer.enroll":
            raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")
        return None


def test_enroll_function_does_not_hide_a_broken_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the enrolment module itself missing means 'not in this build'; a missing dependency inside it
    is a real error and surfaces as such."""
    monkeypatch.delitem(sys.modules, "enhancer.enroll", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenDependency(), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError) as e:
        enroll_function()
    assert e.value.name == "some_dependency" and not isinstance(e.value, EnrollUnavailable)


@pytest.mark.timeout(30)
def test_page_gets_501_when_enrolment_is_not_in_the_build(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import aiohttp

    from benchmarks.harness.calls import http_client, serve_bridge
    from bridge.config import BridgeConfig
    from engines.bicubic import BicubicEngine
    from enhancer.pipeline import FramePipeline

    monkeypatch.setitem(sys.modules, "enhancer.enroll", None)

    async def scenario() -> tuple[int, dict]:
        async with serve_bridge(BridgeConfig(port=0), lambda i: FramePipeline(BicubicEngine())) as (base, _), \
                http_client() as http:
            form = aiohttp.FormData()
            form.add_field("image", b"\xff\xd8", filename="a.jpg", content_type="image/jpeg")
            async with http.post(f"{base}/api/enroll?name=alice", data=form) as r:
                return r.status, await r.json()

    status, body = asyncio.run(scenario())
    assert status == 501 and "not available in this build" in body["error"], body
    assert list_identities() == []


# --- enrolment reports -> the page's verdicts --------------------------------------------------


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    from benchmarks.harness.clips import load_clip, videos_dir

    clip = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"
    if not clip.is_file():
        pytest.skip(f"real clip {clip} not available")
    frames, _ = load_clip(clip, 31)
    return [frames[i] for i in (0, 10, 20, 30)]


def uploads(n_decoded: int, undecodable_at: int) -> list[dict]:
    """What api_enroll builds before enrolling: one entry per upload, decoded or not."""
    out, k = [], 0
    for i in range(n_decoded + 1):
        if i == undecodable_at:
            out.append({"index": i, "file": f"{i}.jpg", "accepted": False, "reason": "not a decodable image"})
        else:
            out.append({"index": i, "file": f"{i}.jpg", "decoded": True, "width": 480, "height": 480})
            k += 1
    return out


@pytest.mark.timeout(60)
def test_a_real_enrolment_report_becomes_one_verdict_per_upload(home: Path, real_frames: list[np.ndarray]) -> None:
    """Four real frames and one undecodable upload: the report covers only the decoded four, in order; every
    upload gets its own verdict, and the report is JSON as it is."""
    fn = enroll_function()
    grey = np.full((240, 240, 3), 128, np.uint8)
    report = report_to_json(fn("alice", [real_frames[0], grey, *real_frames[1:]]))
    assert json.loads(json.dumps(report)) == report
    assert report["n_refs"] == 4 and report["path"] == str(home / "identities" / "alice.safetensors")
    assert list_identities() == ["alice"] and load_identity("alice") is not None

    ups = uploads(5, undecodable_at=2)  # 0.jpg frame, 1.jpg grey, 2.jpg broken, 3-5.jpg frames
    merged = merge_verdicts(ups, report)
    assert [m["file"] for m in merged] == [f"{i}.jpg" for i in range(6)]
    assert [m["accepted"] for m in merged] == [True, False, False, True, True, True]
    assert merged[1]["reason"] == report["images"][1]["reason"] != "ok" and merged[1]["used"] is False
    assert merged[2] == ups[2]  # the bridge's own verdict, untouched
    assert all(m["used"] and m["reason"] == "ok" for m in (merged[0], *merged[3:]))
    assert all(m["width"] == 480 for m in merged if m.get("decoded"))  # the upload's fields are kept


def test_a_refused_enrolment_still_gives_every_upload_a_verdict(home: Path) -> None:
    from enhancer.enroll import EnrollmentError

    grey = np.full((240, 240, 3), 128, np.uint8)
    with pytest.raises(EnrollmentError) as e:
        enroll_function()("nobody", [grey, grey])
    partial = report_to_json(e.value.report)
    assert json.loads(json.dumps(partial)) == partial
    merged = merge_verdicts(uploads(2, undecodable_at=2), partial)
    assert [(m["accepted"], m.get("used")) for m in merged] == [(False, False), (False, False), (False, None)]
    assert merged[0]["reason"] == partial["images"][0]["reason"] and merged[0]["reason"]
    assert list_identities() == []


def test_merge_verdicts_without_a_report_keeps_the_uploads() -> None:
    ups = uploads(2, undecodable_at=0)
    for report in (None, {}, {"images": None}, "not a report", {"images": ["junk", {"accepted": 1}]}):
        merged = merge_verdicts(ups, report)
        assert [m["file"] for m in merged] == ["0.jpg", "1.jpg", "2.jpg"]
        assert merged[0] == ups[0]
    # a verdict that is not a dict is skipped, but still takes its upload's place
    merged = merge_verdicts(ups, {"images": ["junk", {"accepted": 1, "reason": None}]})
    assert "accepted" not in merged[1] and merged[2]["accepted"] is True and merged[2]["reason"] == ""
    assert ups[1] == {"index": 1, "file": "1.jpg", "decoded": True, "width": 480, "height": 480}  # not mutated


@dataclass
class _Report:
    path: Path
    score: np.float32
    layout: np.ndarray
    pixels: np.ndarray
    pairs: tuple = (1, 2.5)
    extra: dict = field(default_factory=dict)


def test_report_to_json_makes_anything_json() -> None:
    rep = _Report(Path("/x/alice.safetensors"), np.float32(0.5), np.arange(6, dtype=np.int64).reshape(3, 2),
                  np.zeros((128, 128, 3), np.uint8), extra={1: np.bool_(True), "obj": object, "none": None})
    out = report_to_json(rep)
    assert json.loads(json.dumps(out)) == out
    assert out["path"] == "/x/alice.safetensors" and out["score"] == 0.5 and type(out["score"]) is float
    assert out["layout"] == [[0, 1], [2, 3], [4, 5]]
    assert out["pixels"] == "<array (128, 128, 3)>"  # pixels never go back to the page
    assert out["pairs"] == [1, 2.5]
    assert out["extra"] == {"1": True, "obj": str(object), "none": None}
    assert report_to_json(None) is None and report_to_json(_Report) == str(_Report)  # a class is not a report
