"""Identity store: private atomic files, strict validation on load, safe names, CLI management.

No model is needed here: identities are random (5, 256) vectors stored with made-up ids, and
the corrupt files are real corruptions of a real stored file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from enhancer.cli import main
from enhancer.errors import InputError, ModelError
from enhancer.identity_store import (
    FORMAT_VERSION,
    IDENTITY_SHAPE,
    MAX_FILE_BYTES,
    IdentityStore,
    likeness_home,
    validate_name,
)

ENC = "enc-000000000001"
# "alice\n": a trailing newline, which "$" alone would let through
BAD_NAMES = ["../x", "a/b", "", ".hidden", "x" * 100, "..", "a\\b", "a b", "a..b", "alice\n"]


def _ident(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(IDENTITY_SHAPE).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path) -> IdentityStore:
    return IdentityStore(tmp_path / "home")


def _saved(store: IdentityStore, name: str = "alice", **kw) -> Path:
    args = {"encoder_id": ENC, "model_id": "student-abc", "n_refs": 4, "source": "photos"} | kw
    return store.save(name, _ident(), **args)


def _rewrite(path: Path, tensors: dict | None = None, meta_update: dict | None = None) -> None:
    """Re-save a stored file with changed tensors or metadata (a valid safetensors file)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata())
    base = load_file(str(path))
    save_file(tensors if tensors is not None else base, str(path), metadata=meta | (meta_update or {}))


def test_home_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIKENESS_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert likeness_home() == tmp_path / "xdg" / "likeness"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert likeness_home() == Path.home() / ".local" / "share" / "likeness"
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "lh"))
    assert likeness_home() == tmp_path / "lh"
    assert IdentityStore().dir == tmp_path / "lh" / "identities"


def test_save_is_private_and_roundtrips(store: IdentityStore) -> None:
    path = _saved(store)
    assert path == store.dir / "alice.safetensors"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert not [p for p in store.dir.iterdir() if p.name.endswith(".tmp")]
    ident = store.load("alice", ENC)
    assert ident.dtype == np.float32 and ident.shape == IDENTITY_SHAPE
    np.testing.assert_array_equal(ident, _ident())
    info = store.show("alice")
    assert info["name"] == "alice" and info["encoder_id"] == ENC and info["model_id"] == "student-abc"
    assert info["n_refs"] == "4" and info["version"] == FORMAT_VERSION and info["photos_kept"] == "no"
    assert info["created"].endswith("+00:00")
    assert "identity" not in info  # metadata only, no tensors
    assert path.stat().st_size < 10_000


def test_no_overwrite_without_force(store: IdentityStore) -> None:
    path = _saved(store)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists.*--force"):
        store.save("alice", _ident(1), encoder_id=ENC, model_id="m", n_refs=3)
    assert path.read_bytes() == before
    store.save("alice", _ident(1), encoder_id=ENC, model_id="m", n_refs=3, force=True)
    np.testing.assert_array_equal(store.load("alice", ENC), _ident(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_refused(store: IdentityStore, name: str) -> None:
    with pytest.raises(InputError):
        validate_name(name)
    with pytest.raises(InputError):
        store.save(name, _ident(), encoder_id=ENC, model_id="m", n_refs=3)
    with pytest.raises(InputError):
        store.load(name, ENC)
    assert not store.dir.exists() or not any(store.dir.iterdir())
    assert not (store.home.parent / "x.safetensors").exists()


@pytest.mark.parametrize("name", ["a", "Ann-Marie_2.v1", "x" * 64, "0", "_x"])
def test_good_names_accepted(name: str) -> None:
    assert validate_name(name) == name


def test_missing_identity(store: IdentityStore) -> None:
    with pytest.raises(ModelError, match=r"no identity named 'bob'; enroll it with `likeness enroll bob"):
        store.load("bob", ENC)


def test_other_encoder_refused(store: IdentityStore) -> None:
    path = _saved(store)
    _rewrite(path, meta_update={"encoder_id": "enc-ffffffffffff"})
    with pytest.raises(ModelError, match=r"identity 'alice' was made by model enc-ffffffffffff.*re-enroll with "
                                         r"`likeness enroll alice"):
        store.load("alice", ENC)


def _corrupt(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "header only":
        path.write_bytes(data[:5])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong shape":
        _rewrite(path, {"identity": np.zeros((4, 256), np.float32)})
    elif kind == "rows of no spatial map":
        _rewrite(path, {"identity": np.zeros((5 + 15, 256), np.float32)})
    elif kind == "wrong dtype":
        _rewrite(path, {"identity": np.zeros(IDENTITY_SHAPE, np.float64)})
    elif kind == "nan":
        bad = _ident()
        bad[2, 7] = np.nan
        _rewrite(path, {"identity": bad})
    elif kind == "inf":
        bad = _ident()
        bad[0, 0] = np.inf
        _rewrite(path, {"identity": bad})
    elif kind == "extra tensor":
        _rewrite(path, {"identity": _ident(), "payload": np.zeros(10, np.float32)})
    elif kind == "oversized":
        _rewrite(path, meta_update={"padding": "x" * (MAX_FILE_BYTES + 10)})
    elif kind == "huge":
        with path.open("ab") as fh:
            fh.truncate(50_000_000)
    elif kind == "not an identity":
        save_file({"identity": _ident()}, str(path), metadata={"format": "other"})
    elif kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"identity": _ident()}))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "header only", "empty", "wrong shape",
                                  "rows of no spatial map", "wrong dtype",
                                  "nan", "inf", "extra tensor", "oversized", "huge", "not an identity", "pickle"])
def test_corrupt_files_refused(store: IdentityStore, kind: str) -> None:
    path = _saved(store)
    _corrupt(kind, path)
    with pytest.raises(ModelError) as e:
        store.load("alice", ENC)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    listed = store.list()
    assert listed[0]["name"] == "alice" and "problem" in listed[0]  # listing still works


def test_kept_photos_allow_larger_files(store: IdentityStore) -> None:
    refs = np.random.default_rng(0).integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
    path = _saved(store, refs=refs)
    assert path.stat().st_size > refs.nbytes  # the photos are in the file, which still loads
    assert store.show("alice")["photos_kept"] == "yes"
    store.load("alice", ENC)
    np.testing.assert_array_equal(store.read("alice").refs, refs)


def test_list_show_remove(store: IdentityStore) -> None:
    assert store.list() == []
    _saved(store, "bob")
    _saved(store, "alice")
    (store.dir / ".alice.junk.tmp").write_bytes(b"x")  # stray temp files are not identities
    assert [i["name"] for i in store.list()] == ["alice", "bob"]
    path = store.remove("bob")
    assert not path.exists()
    assert [i["name"] for i in store.list()] == ["alice"]
    with pytest.raises(InputError, match="no identity named 'bob'"):
        store.remove("bob")


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("likeness: error: ")
    return err


def test_cli_identities(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "lh"))
    assert main(["identities", "list"]) == 0
    assert "no identities enrolled" in capsys.readouterr().out

    store = IdentityStore()
    _saved(store, "alice")
    _saved(store, "bob")
    assert main(["identities", "list"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and ENC in out and "2 identities" in out

    assert main(["identities", "show", "alice"]) == 0
    out = capsys.readouterr().out
    assert "name: alice" in out and f"encoder_id: {ENC}" in out and "n_refs: 4" in out

    assert main(["identities", "remove", "bob"]) == 0
    out = capsys.readouterr().out
    assert "removed identity 'bob'" in out and "deleted" in out
    assert not (store.dir / "bob.safetensors").exists()

    assert main(["identities", "remove", "bob"]) == 2
    assert "no identity named 'bob'" in _one_line_error(capsys)
    assert main(["identities", "show", "carol"]) == 2
    assert "no identity named 'carol'" in _one_line_error(capsys)
    assert main(["identities", "show", "../x"]) == 2
    assert "path separator" in _one_line_error(capsys)

    (store.dir / "alice.safetensors").write_bytes(b"\x00" * 100)
    assert main(["identities", "show", "alice"]) == 2
    assert "corrupt identity file" in _one_line_error(capsys)
    assert main(["identities", "list"]) == 0
    assert "UNUSABLE" in capsys.readouterr().out


def test_store_does_not_touch_env_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An explicit home wins over $LIKENESS_HOME (the bridge and tests pass one)."""
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "env"))
    s = IdentityStore(tmp_path / "explicit")
    _saved(s)
    assert (tmp_path / "explicit" / "identities" / "alice.safetensors").is_file()
    assert not (tmp_path / "env").exists()
    assert json.loads(json.dumps(s.show("alice")))["name"] == "alice"
    assert os.listdir(tmp_path / "explicit" / "identities") == ["alice.safetensors"]


def test_identity_with_a_spatial_map_roundtrips(store: IdentityStore) -> None:
    """An encoder with a 16x16 spatial identity map makes (5 + 256, 256) identities."""
    ident = np.random.default_rng(3).standard_normal((5 + 16 * 16, 256)).astype(np.float32)
    store.save("spatial", ident, encoder_id="enc-sp", model_id="m", n_refs=4)
    assert np.array_equal(store.load("spatial", "enc-sp"), ident)
    with pytest.raises(ModelError, match="re-enroll"):
        store.load("spatial", "enc-other")


def test_identity_with_both_spatial_maps_roundtrips(store: IdentityStore) -> None:
    """With the fine 32x32 map as well: (5 + 256 + 256, 256), ~530 kB, still under the size cap;
    a row count no encoder makes is refused as corrupt."""
    ident = np.random.default_rng(4).standard_normal((5 + 256 + 256, 256)).astype(np.float32)
    store.save("fine", ident, encoder_id="enc-fine", model_id="m", n_refs=4)
    assert np.array_equal(store.load("fine", "enc-fine"), ident)
    with pytest.raises(ModelError, match="refusing"):
        store.save("odd", ident[:-3], encoder_id="enc-fine", model_id="m", n_refs=4)


def test_reference_detail_roundtrips_and_is_validated(store: IdentityStore) -> None:
    detail = np.random.default_rng(3).integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
    path = _saved(store, detail=detail)
    got = store.read("alice")
    assert np.array_equal(got.detail, detail) and got.refs is None
    assert store.show("alice")["reference_detail"] == "yes"
    assert store.read("alice").detail.dtype == np.uint8
    _rewrite(path, {"identity": _ident(), "detail": detail[..., :2].copy()})
    with pytest.raises(ModelError, match="reference detail"):
        store.read("alice")
    with pytest.raises(ModelError, match="reference detail"):
        store.save("bob", _ident(), encoder_id=ENC, model_id="m", n_refs=4, detail=detail[:, :64, :32])
    _saved(store, "carol")
    assert store.read("carol").detail is None and store.show("carol")["reference_detail"] == "no"
