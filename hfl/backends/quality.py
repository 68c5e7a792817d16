"""Quality-scorer backend selection: BRISQUE (offline default) or DOVER (paper, from a local ONNX file)."""

from __future__ import annotations

from dataclasses import dataclass

from hfl.backends.base import BackendUnavailable, QualityScorer

SCORERS = ("brisque", "dover")


@dataclass
class QualityBackendConfig:
    scorer: str = "brisque"  # brisque (offline default) | dover (paper; real weights from dover_path)
    dover_path: str = ""  # DOVER ONNX export (onnx_dover.onnx from the repo's convert_to_onnx.py)
    device: str = "cpu"  # device for DOVER: cpu | cuda | cuda:N (onnxruntime execution provider)


def load_quality_scorer(cfg: QualityBackendConfig) -> QualityScorer:
    """The configured scorer; raises BackendUnavailable (naming the missing file/package) if it can't load."""
    if cfg.scorer == "brisque":
        from hfl.backends.quality_brisque import BrisqueScorer

        return BrisqueScorer()
    if cfg.scorer == "dover":
        from hfl.backends.quality_dover import DoverScorer

        return DoverScorer(cfg.dover_path, device=cfg.device)
    raise BackendUnavailable(
        f"backends.quality.scorer: unknown scorer {cfg.scorer!r} (choose from {SCORERS})"
    )


def check_quality_weights(cfg: QualityBackendConfig) -> list[str]:
    """Human-readable problems with the configured scorer's files/packages, without loading anything."""
    if cfg.scorer == "brisque":
        from hfl.backends.quality_brisque import brisque_model_dir

        try:
            brisque_model_dir()
        except BackendUnavailable as e:
            return [f"backends.quality: {e}"]
        return []
    if cfg.scorer == "dover":
        from hfl.backends.quality_dover import check_dover_file

        return check_dover_file(cfg.dover_path)
    return [f"backends.quality.scorer: unknown scorer {cfg.scorer!r} (choose from {SCORERS})"]
