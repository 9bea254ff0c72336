"""Fuzz IdentityStore.load: arbitrary bytes and mutated real files give ModelError or the exact identity.

The valid file is one the store itself wrote (real safetensors, real metadata). Mutations
flip bytes in the header or the tensor data, truncate, append or splice. Loading must either
raise ModelError (the CLI prints it as one line and exits non-zero; the bridge answers 400) or
return a complete, finite (5, 256) float32 identity; never another exception type and never
a half-filled array. safetensors has no checksum, so a flip inside the tensor data can load:
then exactly the float(s) covering the flipped byte may differ, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enhancer.errors import ModelError
from enhancer.identity_store import IDENTITY_SHAPE, IdentityStore

ENC = "enc-fuzz-0001"
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class Fixture:
    """A store with one real identity file, and its original bytes."""

    def __init__(self, home: Path) -> None:
        self.store = IdentityStore(home)
        self.identity = np.random.default_rng(7).standard_normal(IDENTITY_SHAPE).astype(np.float32)
        self.path = self.store.save("alice", self.identity, encoder_id=ENC, model_id="student-x", n_refs=3,
                                    source="photos")
        self.data = self.path.read_bytes()
        self.header_end = 8 + int.from_bytes(self.data[:8], "little")

    def load(self, blob: bytes) -> np.ndarray | None:
        """Write ``blob`` as the identity file and load it: the array, or None on ModelError."""
        self.path.write_bytes(blob)
        try:
            out = self.store.load("alice", ENC)
        except ModelError as e:
            assert str(e).strip() and "\n" not in str(e).strip()  # one line, fit for the CLI
            return None
        # anything that loads is a whole identity, never a partial one
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == IDENTITY_SHAPE
        assert np.isfinite(out).all()
        return out


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("idfuzz"))


def test_valid_file_loads(fx: Fixture) -> None:
    out = fx.load(fx.data)
    assert out is not None and np.array_equal(out, fx.identity)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_model_error(fx: Fixture, blob: bytes) -> None:
    assert fx.load(blob) is None


@FUZZ
@given(st.data())
def test_header_byte_flips(fx: Fixture, data: st.DataObject) -> None:
    """Flips in the length prefix or JSON header: ModelError, or (a harmless metadata change) the same identity."""
    blob = bytearray(fx.data)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, fx.header_end - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    out = fx.load(bytes(blob))
    if out is not None:
        assert np.array_equal(out, fx.identity)


@FUZZ
@given(st.data())
def test_data_byte_flips(fx: Fixture, data: st.DataObject) -> None:
    """Flips in the tensor bytes: ModelError (non-finite) or only the touched floats differ."""
    blob = bytearray(fx.data)
    touched = set()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(fx.header_end, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
        touched.add((i - fx.header_end) // 4)
    out = fx.load(bytes(blob))
    if out is not None:
        changed = set(np.flatnonzero(out.ravel() != fx.identity.ravel()).tolist())
        assert changed <= touched


@FUZZ
@given(cut=st.integers(0, 10_000), extra=st.binary(min_size=1, max_size=64), where=st.sampled_from(
    ["truncate", "append", "insert", "delete"]), pos=st.integers(0, 10_000))
def test_truncate_append_splice(fx: Fixture, cut: int, extra: bytes, where: str, pos: int) -> None:
    """Any change of length is caught: the header's offsets must cover the data exactly."""
    d = fx.data
    n = len(d)
    if where == "truncate":
        blob = d[: cut % n]
    elif where == "append":
        blob = d + extra
    elif where == "insert":
        p = pos % n
        blob = d[:p] + extra + d[p:]
    else:
        p = pos % n
        blob = d[:p] + d[p + 1 + cut % 16:]
    assert fx.load(blob) is None


@FUZZ
@given(st.data())
def test_forged_headers(fx: Fixture, data: st.DataObject) -> None:
    """Well-formed safetensors headers with hostile contents (dtype, shape, offsets, metadata types)."""
    header = json.loads(fx.data[8:fx.header_end])
    body = fx.data[fx.header_end:]
    entry = header["identity"]
    choice = data.draw(st.sampled_from(["dtype", "shape", "offsets", "meta", "extra tensor", "no meta", "meta type"]))
    if choice == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(["F16", "F64", "I32", "U8", "BOOL", "BF16", "X", ""]))
    elif choice == "shape":
        entry["shape"] = data.draw(st.lists(st.integers(-2, 2000), max_size=4))
    elif choice == "offsets":
        entry["data_offsets"] = data.draw(st.lists(st.integers(-10, 20_000), min_size=0, max_size=3))
    elif choice == "meta":
        key = data.draw(st.sampled_from(["format", "version", "encoder_id", "name", "n_refs", "created"]))
        header["__metadata__"][key] = data.draw(st.one_of(st.text(max_size=8), st.integers(), st.none()))
    elif choice == "extra tensor":
        header[data.draw(st.sampled_from(["refs", "x", "identity2"]))] = dict(entry)
    elif choice == "no meta":
        del header["__metadata__"]
    else:
        header["__metadata__"] = data.draw(st.one_of(st.lists(st.text(max_size=3)), st.text(), st.integers()))
    raw = json.dumps(header).encode()
    out = fx.load(len(raw).to_bytes(8, "little") + raw + body)
    if out is not None:  # only a harmless change can load, and then it is the stored identity
        assert np.array_equal(out, fx.identity)


def test_deeply_nested_header_is_model_error(fx: Fixture) -> None:
    raw = b"[" * 100_000
    assert fx.load(len(raw).to_bytes(8, "little") + raw) is None


def corrupt_blobs(fx: Fixture) -> dict[str, bytes]:
    """Real corruptions of the stored file: cut short, header byte flipped, NaN written into the tensor."""
    d = fx.data
    flipped = bytearray(d)
    flipped[fx.header_end - 5] ^= 0x5A  # inside the JSON header
    nan = bytearray(d)
    nan[fx.header_end:fx.header_end + 4] = np.array([np.nan], np.float32).tobytes()
    return {"truncated": d[: len(d) // 2], "header flip": bytes(flipped), "NaN value": bytes(nan)}


@pytest.mark.timeout(60)
def test_corrupt_identity_is_one_line_cli_error_and_http_400(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The same corrupt files through the CLI (exit 2, one line, no traceback) and the bridge (400 with the reason)."""
    import asyncio

    from benchmarks.harness.calls import http_client, serve_bridge
    from bridge.config import BridgeConfig
    from bridge.factory import default_processor_factory
    from enhancer.cli import main

    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path))
    fx = Fixture(tmp_path)
    blobs = corrupt_blobs(fx)
    for what, blob in blobs.items():
        fx.path.write_bytes(blob)
        assert main(["identities", "show", "alice"]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("likeness: error:") and "\n" not in err and "Traceback" not in err, (what, err)

    async def offers() -> list[tuple[str, int, str]]:
        from aiortc import RTCPeerConnection

        from bridge.ice import rtc_configuration

        out = []
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            for what, blob in blobs.items():
                fx.path.write_bytes(blob)
                pc = RTCPeerConnection(rtc_configuration())
                pc.addTransceiver("video", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                async with http.post(f"{base}/whip/r?identity=alice", data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"}) as r:
                    out.append((what, r.status, await r.text()))
                await pc.close()
            assert not bridge.sessions  # nothing half-made
        return out

    for what, status, text in asyncio.run(offers()):
        assert status == 400 and "corrupt" in text and "alice" in text, (what, status, text)
