"""The browser extension's pairing code is made once and kept: `likeness serve` as a person runs it.

Fast (no browser, no face models): `serve` runs through the CLI with a stub processor factory
and a bridge that stops as soon as it has printed its lines, under a temporary Likeness home.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

import bridge.server
import enhancer.commands.assemble
from bridge.pairing import PAIRING_FILE, PAIRING_HEADER, _refusal, check_code, write_pairing_code
from enhancer.cli import main as cli_main

PREFIX = "browser extension pairing code: "


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Likeness home that does not exist yet; `serve` starts and stops at once, loading no models."""
    home = tmp_path / "home"
    monkeypatch.setenv("LIKENESS_HOME", str(home))
    monkeypatch.delenv("LIKENESS_PAIRING_CODE", raising=False)
    monkeypatch.setenv("LIKENESS_TOKEN", "")
    monkeypatch.setattr(enhancer.commands.assemble, "make_factory", lambda *a, **k: (lambda identity: None))
    real_run_server = bridge.server.run_server

    async def run_and_stop(config, factory, view_builder=None):  # the real server: binds, prints, stops
        stop = asyncio.Event()
        stop.set()
        await real_run_server(config, factory, stop, view_builder)

    monkeypatch.setattr(bridge.server, "run_server", run_and_stop)
    return home


def serve(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    """Run `likeness serve`; (exit code, the printed pairing code line's rest or '', stderr)."""
    rc = cli_main(["serve", "--port", "0", *extra])
    out, err = capsys.readouterr()
    lines = [ln.removeprefix(PREFIX) for ln in out.splitlines() if ln.startswith(PREFIX)]
    return rc, (lines[0] if lines else ""), err


def printed_code(line: str) -> str:
    return line.split(" ", 1)[0]


def test_first_serve_creates_a_private_code_file_and_prints_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line, err = serve(capsys)
    assert rc == 0, err
    path = home / PAIRING_FILE
    code = path.read_text().strip()
    assert check_code(code) is None and printed_code(line) == code
    assert "new, saved in" in line and str(path) in line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # made like the identity store's home
    assert [p.name for p in home.iterdir()] == [PAIRING_FILE]  # no temp file left behind


def test_a_later_serve_reuses_the_code(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = serve(capsys)
    rc, second, err = serve(capsys)
    assert rc == 0, err
    assert printed_code(second) == printed_code(first)
    assert "paired extensions stay paired" in second


def test_new_pairing_code_rotates_it_and_the_old_one_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = serve(capsys)
    old = printed_code(first)
    rc, line, err = serve(capsys, "--new-pairing-code")
    new = printed_code(line)
    assert rc == 0 and new != old, err
    assert "no longer works" in line
    path = home / PAIRING_FILE
    assert path.read_text().strip() == new and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert printed_code(serve(capsys)[1]) == new  # kept from then on

    def status(given: str) -> int | None:
        refused = _refusal(make_mocked_request("GET", "/ext/hello", headers={PAIRING_HEADER: given}), new)
        return None if refused is None else refused.status

    assert status(old) == 403 and status(new) is None


def test_an_override_is_used_but_never_written(home: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rc, line, err = serve(capsys, "--pairing-code", "abcd-efgh-jk")
    assert rc == 0 and printed_code(line) == "abcd-efgh-jk" and "not saved" in line, err
    assert not home.exists()
    monkeypatch.setenv("LIKENESS_PAIRING_CODE", "ZZZZ-YYYY")
    rc, line, err = serve(capsys)
    assert rc == 0 and printed_code(line) == "ZZZZ-YYYY", err
    assert not home.exists()
    # with a kept code too: the override wins for this run and the file is untouched
    monkeypatch.delenv("LIKENESS_PAIRING_CODE")
    kept = printed_code(serve(capsys)[1])
    assert printed_code(serve(capsys, "--pairing-code", "QQQQ-RRRR")[1]) == "QQQQ-RRRR"
    assert (home / PAIRING_FILE).read_text().strip() == kept
    rc, _, err = serve(capsys, "--pairing-code", "QQQQ-RRRR", "--new-pairing-code")
    assert rc == 2 and err.count("\n") == 1 and "exclude each other" in err
    assert (home / PAIRING_FILE).read_text().strip() == kept


@pytest.mark.parametrize("content", [b"", b"short\n", b"not a code!\n", b"\xff\xfe\x00ABCD-EFGH\n", b"A" * 300])
def test_a_corrupt_code_file_is_a_one_line_error(home: Path, capsys: pytest.CaptureFixture[str],
                                                  content: bytes) -> None:
    home.mkdir()
    path = home / PAIRING_FILE
    path.write_bytes(content)
    rc, line, err = serve(capsys)
    assert rc == 2 and line == ""  # never started, never a silent new code
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("likeness: error: corrupt pairing code file") and str(path) in err, err
    assert path.read_bytes() == content
    rc, line, err = serve(capsys, "--new-pairing-code")  # the way out the message names
    assert rc == 0 and printed_code(line) == path.read_text().strip(), err


def test_an_unreadable_code_file_is_a_one_line_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / PAIRING_FILE).mkdir(parents=True)  # unreadable as a file, even for root
    rc, _, err = serve(capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("likeness: error: cannot read pairing code file") and str(home / PAIRING_FILE) in err


def test_write_replaces_a_loose_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / PAIRING_FILE
    path.write_text("OLDC-ODEX\n")
    path.chmod(0o644)
    write_pairing_code(path, "ABCD-EFGH")
    assert path.read_text() == "ABCD-EFGH\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [PAIRING_FILE]
