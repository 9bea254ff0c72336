"""`likeness extension pack`: the browser extension as a folder (for "Load unpacked") or a zip.

The extension's files ship inside the ``bridge`` package (``bridge/extension/``), so an
installed wheel can hand them out without a source checkout.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from ..errors import LikenessError


def extension_dir() -> Path:
    """The extension's source folder inside the installed ``bridge`` package."""
    import bridge

    path = Path(bridge.__file__).resolve().parent / "extension"
    if not (path / "manifest.json").is_file():
        raise LikenessError(f"the browser extension is missing from this install ({path})")
    return path


def _files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def pack(out: Path) -> Path:
    """Copy the extension to the folder ``out``, or write it as a zip when ``out`` ends in .zip."""
    src = extension_dir()
    if out.suffix.lower() == ".zip":
        if out.is_dir():
            raise LikenessError(f"{out} is a folder; give a .zip file name or a folder without .zip")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in _files(src):
                z.write(f, f.relative_to(src).as_posix())
        return out
    if out.exists() and not out.is_dir():
        raise LikenessError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise LikenessError(f"{out} is a non-empty folder that is not a Likeness extension; pick another")
    for f in _files(src):
        dest = out / f.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
    return out


def register(sub) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser("extension", help="the Chromium extension that gives any web meeting the enhanced camera")
    esub = p.add_subparsers(dest="extension_command", required=True, metavar="ACTION")
    pk = esub.add_parser("pack", help="write the extension as a folder (Load unpacked) or a .zip")
    pk.add_argument("--out", type=Path, default=Path("likeness-extension"),
                    help="folder to write (default ./likeness-extension), or FILE.zip")
    pk.set_defaults(func=_pack)


def _pack(args) -> int:  # type: ignore[no-untyped-def]
    try:
        out = pack(args.out)
    except OSError as e:
        raise LikenessError(f"cannot write {args.out}: {e.strerror or e}") from None
    how = "a zip" if out.suffix.lower() == ".zip" else "a folder"
    print(f"wrote the extension as {how}: {out}\n"
          "load it at chrome://extensions (Developer mode, Load unpacked; unzip a .zip first), then pair it "
          "with the code `likeness serve` prints")
    return 0
