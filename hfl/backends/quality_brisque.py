"""Offline BRISQUE quality scorer (Mittal et al. 2012) using the model that the `brisque` PyPI package ships.

Features are computed exactly as `brisque.BRISQUE.score` (v0.2.0) computes them — grey image by
`skimage.color.rgb2gray` in [0, 1], MSCN with a 7x7 Gaussian (sigma 7/6, zero padding, C = 1/255), AGGD fits
of the MSCN map and of its four neighbour products, at full and half (cv2 bicubic) scale: 36 features — but
vectorised (cv2 filtering, closed-form moments, a monotone root solve by bisection instead of
`scipy.optimize.root`), and the package's epsilon-SVR (RBF kernel) is evaluated in numpy from its `svm.txt`
and `normalize.pickle`, so neither libsvm nor the package's module (which imports `requests`,
`scipy.ndimage.filters`, ...) is needed at run time; only its data files are read.

Mapping to [0, 1] (higher is better): ``q = clip(1 - brisque / 100, 0, 1)``, where ``brisque`` is the raw
BRISQUE score (≈0 pristine, ≈100 very distorted). A clip's score is the mean of its frames' ``q``; a flat
frame (undefined statistics, NaN BRISQUE) counts as q = 0.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import cv2
import numpy as np
from scipy import special

from hfl.backends.base import BackendUnavailable

_KERNEL_SIZE = 7
_SIGMA = 7 / 6
_C = 1 / 255
# skimage.color.rgb2gray weights (ITU-R BT.709), as used by the brisque package.
_GRAY = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)


def brisque_model_dir() -> Path:
    """Directory holding `svm.txt` and `normalize.pickle` of the installed `brisque` package."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("BRISQUE scorer needs the `brisque` package (pip install brisque)")
    d = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in ("svm.txt", "normalize.pickle"):
        if not (d / name).is_file():
            raise BackendUnavailable(f"brisque package model file not found: {d / name}")
    return d


def _parse_libsvm_model(path: Path, n_features: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(gamma, rho, sv_coef (n,), support_vectors (n, d)) of a libsvm epsilon-SVR RBF model file."""
    header: dict[str, str] = {}
    coefs: list[float] = []
    rows: list[np.ndarray] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line == "SV":
                break
            key, _, val = line.partition(" ")
            header[key] = val
        for line in f:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            row = np.zeros(n_features, dtype=np.float64)
            for item in parts[1:]:
                idx, val = item.split(":")
                row[int(idx) - 1] = float(val)
            rows.append(row)
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise BackendUnavailable(f"unsupported BRISQUE SVM model in {path}: {header}")
    return float(header["gamma"]), float(header["rho"]), np.asarray(coefs), np.stack(rows)


def _gaussian_kernel(n: int, sigma: float) -> np.ndarray:
    y, x = np.indices((n, n)) - n // 2
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / k.sum()


_ALPHA_GRID = np.linspace(0.05, 20.0, 4000)


def _phi(alpha: np.ndarray | float) -> np.ndarray:
    """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)): monotone increasing in a (0 -> 0.75)."""
    lg = special.gammaln
    a = np.asarray(alpha, dtype=np.float64)
    return np.exp(2 * lg(2 / a) - lg(1 / a) - lg(3 / a))


_PHI_GRID = _phi(_ALPHA_GRID)


def _solve_alpha(r: float) -> float:
    """Shape alpha with phi(alpha) = r (what the package finds with scipy.optimize.root from 0.2)."""
    i = int(np.searchsorted(_PHI_GRID, r))
    if i <= 0:
        return float(_ALPHA_GRID[0])
    if i >= len(_ALPHA_GRID):
        return float(_ALPHA_GRID[-1])
    lo, hi = float(_ALPHA_GRID[i - 1]), float(_ALPHA_GRID[i])
    for _ in range(40):  # bisection to ~1e-14 on a bracket of width 0.005
        mid = 0.5 * (lo + hi)
        if float(_phi(mid)) < r:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _aggd_features(x: np.ndarray) -> tuple[float, float, float, float]:
    """AGGD fit (alpha, mean, sigma_l^2, sigma_r^2) exactly as brisque 0.2.0 does it."""
    x = x.ravel()
    neg = x < 0
    x2 = x * x
    n_l = int(neg.sum())
    n_r = x.size - n_l
    ss_l = float(x2[neg].sum())
    ss_r = float(x2.sum()) - ss_l
    var_l = ss_l / n_l if n_l else np.nan
    var_r = ss_r / n_r if n_r else np.nan
    r_hat = float(np.abs(x).mean()) ** 2 / float(x2.mean())
    gamma = np.sqrt(var_l) / np.sqrt(var_r)
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = _solve_alpha(big_r)
    const = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (np.sqrt(var_r) - np.sqrt(var_l)) * const * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), var_l, var_r


def _scale_features(gray: np.ndarray, kernel: np.ndarray) -> list[float]:
    """18 BRISQUE features of one scale of a float64 grey image in [0, 1]."""
    mu = cv2.filter2D(gray, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)
    ex2 = cv2.filter2D(gray * gray, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)
    mscn = (gray - mu) / (np.sqrt(np.abs(mu * mu - ex2)) + _C)
    pairs = (
        mscn[:, :-1] * mscn[:, 1:],
        mscn[:-1, :] * mscn[1:, :],
        mscn[:-1, :-1] * mscn[1:, 1:],
        mscn[1:, :-1] * mscn[:-1, 1:],
    )
    a, _, vl, vr = _aggd_features(mscn)
    feats = [a, (vl + vr) / 2]
    for p in pairs:
        feats.extend(_aggd_features(p))
    return feats


class BrisqueScorer:
    """BRISQUE (package-shipped LIVE model), mapped to q = clip(1 - brisque/100, 0, 1), mean over frames."""

    name = "brisque"

    def __init__(self, model_dir: str | Path | None = None) -> None:
        """Load `svm.txt` / `normalize.pickle` from `model_dir` (default: the installed brisque package)."""
        d = Path(model_dir) if model_dir else brisque_model_dir()
        with open(d / "normalize.pickle", "rb") as f:
            params = pickle.load(f)
        self._min = np.asarray(params["min_"], dtype=np.float64)
        self._max = np.asarray(params["max_"], dtype=np.float64)
        self._gamma, self._rho, self._coef, self._sv = _parse_libsvm_model(d / "svm.txt", len(self._min))
        self._sv_sq = (self._sv**2).sum(1)
        self._kernel = _gaussian_kernel(_KERNEL_SIZE, _SIGMA)

    def features(self, image: np.ndarray) -> np.ndarray:
        """The 36 raw BRISQUE features of an RGB (or grey) uint8 image."""
        img = np.asarray(image)
        if img.ndim == 3:
            img = img[..., :3].astype(np.float64) @ _GRAY
        else:
            img = img.astype(np.float64)
        if np.issubdtype(np.asarray(image).dtype, np.integer):
            img = img / 255.0
        half = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        return np.asarray(_scale_features(img, self._kernel) + _scale_features(half, self._kernel))

    def brisque(self, image: np.ndarray) -> float:
        """Raw BRISQUE score of one image (lower is better, ~0..100)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            f = self.features(image)
        x = -1 + 2.0 * (f - self._min) / (self._max - self._min)
        d2 = self._sv_sq - 2 * self._sv @ x + x @ x
        return float(self._coef @ np.exp(-self._gamma * d2) - self._rho)

    def score(self, frames: list[np.ndarray]) -> float:
        """Mean over frames of clip(1 - brisque/100, 0, 1)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        if len(frames) == 0:
            raise ValueError("BrisqueScorer.score needs at least one frame")
        qs = []
        for f in frames:
            b = self.brisque(f)
            # A flat frame has undefined MSCN statistics (NaN features): treat it as worst quality.
            qs.append(float(np.clip(1.0 - b / 100.0, 0.0, 1.0)) if np.isfinite(b) else 0.0)
        return float(np.mean(qs))
