"""LaTo inference on CPU with a tiny model: the run loader, landmark-aware CFG and ``hfl edit`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from hfl.lato.sampling import GuidanceConfig, combine, sample, schedule
from inference.face import to_canvas

pytestmark = pytest.mark.usefixtures("single_torch_thread")

RECIPE = Path(__file__).resolve().parents[1] / "training" / "lato_tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run folder as ``hfl train lato`` leaves it (export/ files), with non-trivial LoRA and tokens."""
    from accelerate.utils import set_seed

    from training.lato import add_lora, build_parts, export_weights, unwrap_dit

    cfg = yaml.safe_load(RECIPE.read_text())
    set_seed(cfg["train"].get("seed", 0))
    parts = build_parts(cfg)
    model = add_lora(parts.dit, cfg["lora"]["rank"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.endswith("landmark_uncond"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    run = tmp_path_factory.mktemp("lato-run")
    export_weights(model, run / "export")
    torch.save(model.state_dict(), run / "reference.pt")
    return run, cfg, unwrap_dit(model)


def _inputs(bundle, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gh, gw = bundle.height // 16, bundle.width // 16
    c = bundle.config
    text, mask = bundle.text_encoder(["Turn his head 30° left."])
    null, null_mask = bundle.text_encoder([""])
    return dict(
        noise=torch.randn(1, gh * gw, c.in_channels, generator=g),
        source=torch.randn(1, gh * gw, c.in_channels, generator=g),
        grid_hw=(gh, gw),
        text=text,
        text_mask=mask,
        null_text=null,
        null_mask=null_mask,
        landmark_tokens=torch.randn(1, 68, c.landmark_dim, generator=g),
        landmark_xy=torch.rand(1, 68, 2, generator=g) * bundle.width,
        image_hw=(bundle.height, bundle.width),
        zero_tokens=torch.randn(1, 68, c.landmark_dim, generator=g),
    )


def test_run_loader_matches_the_trained_model(tiny_run) -> None:
    from inference.model import load_run

    run, cfg, trained = tiny_run
    bundle = load_run(run, cfg)
    x = _inputs(bundle)
    kw = dict(
        noisy=x["noise"], source=x["source"], grid_hw=x["grid_hw"], timesteps=torch.tensor([0.5]),
        text=x["text"], text_mask=x["text_mask"], landmark_tokens=x["landmark_tokens"],
        landmark_xy=x["landmark_xy"], image_hw=x["image_hw"],
    )  # fmt: skip
    with torch.no_grad():
        want = trained(**kw)
        got = bundle.dit(**kw)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.equal(bundle.dit.landmark_uncond, trained.landmark_uncond)


def test_schedule_and_combine() -> None:
    ts = schedule(28, 1024)
    assert (
        len(ts) == 29
        and ts[0] == 1.0
        and ts[-1] == 0.0
        and all(a > b for a, b in zip(ts[:-1], ts[1:], strict=True))
    )
    assert ts[14] > 0.5  # shifted towards noise
    assert schedule(4, 64, shift=False) == [1.0, 0.75, 0.5, 0.25, 0.0]
    cc, cu, uu = torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.5])
    # v = uu + s_t (cu - uu) + s_f (cc - cu) = 0.5 + 6 * 0.5 + 4 * 2 = 11.5
    assert combine(cc, cu, uu, 6.0, 4.0).item() == pytest.approx(11.5)
    assert combine(cc, cu, None, 1.0, 4.0).item() == pytest.approx(1.0 + 4 * 2.0)
    assert combine(cc, None, uu, 6.0, 1.0).item() == pytest.approx(0.5 + 6 * 2.5)
    assert combine(cc, None, None, 1.0, 1.0).item() == 3.0


def test_cfg_learned_uncond_differs_from_zeroed_landmarks(tiny_run) -> None:
    from inference.model import load_run

    run, cfg, _ = tiny_run
    bundle = load_run(run, cfg)
    x = _inputs(bundle)

    def run_cfg(**g) -> torch.Tensor:
        return sample(bundle.dit, guidance=GuidanceConfig(steps=3, **g), **x)

    learned, zero = run_cfg(uncond="learned"), run_cfg(uncond="zero")
    assert (learned - zero).abs().max() > 1e-3
    # without landmark CFG the unconditional landmark branch is never used: both modes agree exactly
    assert torch.equal(
        run_cfg(uncond="learned", landmark_scale=1.0), run_cfg(uncond="zero", landmark_scale=1.0)
    )
    # landmark CFG changes the result compared with text-only CFG
    assert (learned - run_cfg(landmark_scale=1.0)).abs().max() > 1e-3
    # seeded: same inputs, same output
    assert torch.equal(learned, run_cfg(uncond="learned"))
    with pytest.raises(ValueError, match="uncond"):
        run_cfg(uncond="random")


def test_hfl_edit_end_to_end(tiny_run, astronaut: np.ndarray, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hfl.cli import app
    from hfl.landmarks import head_pose

    run, _, _ = tiny_run
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out" / "edit.png"
    args = ["edit", "--image", str(img), "--instruction", "Turn her head 30° left.", "-o", str(out)]
    args += ["--run", str(run), "--recipe", str(RECIPE), "--steps", "4", "--seed", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    edited = cv2.imread(str(out))
    assert edited is not None and edited.shape == astronaut.shape
    panel = cv2.imread(str(out.parent / "edit_panel.png"))
    assert panel.shape == (512, 1536, 3)
    rec = json.loads((out.parent / "edit_edit.jsonl").read_text().splitlines()[0])
    src, tgt = np.asarray(rec["source_landmarks"]), np.asarray(rec["target_landmarks"])
    yaw_change = head_pose(tgt, 512, 512)[0] - head_pose(src, 512, 512)[0]
    assert yaw_change == pytest.approx(-30, abs=5)  # the geometric predictor turned the face left
    assert rec["timings"]["sample_s"] > 0
    # given landmarks skip the predictor and are used as they are
    lm = tmp_path / "target.json"
    lm.write_text(json.dumps({"landmarks": src.tolist()}))
    out2 = tmp_path / "out" / "same.png"
    args2 = args[:4] + ["Make her smile.", "-o", str(out2), "--landmarks", str(lm)] + args[7:]
    res = CliRunner().invoke(app, args2)
    assert res.exit_code == 0, res.output
    rec2 = json.loads((out2.parent / "same_edit.jsonl").read_text())
    assert np.allclose(rec2["target_landmarks"], src, atol=0.01)
    # no model given: a clear error, exit code 2
    res = CliRunner().invoke(app, ["edit", "--image", str(img), "--instruction", "x", "-o", str(out)])
    assert res.exit_code == 2 and "--run" in res.output


def test_edit_pipeline_is_seeded(tiny_run, two_men: tuple) -> None:
    from inference.model import load_run
    from inference.pipeline import LaToEditor

    run, cfg, _ = tiny_run
    ed = LaToEditor(load_run(run, cfg))
    g = GuidanceConfig(steps=2)
    a = ed.edit(two_men[0], "Turn his head 30° right.", guidance=g, seed=1)
    b = ed.edit(two_men[0], "Turn his head 30° right.", guidance=g, seed=1)
    c = ed.edit(two_men[0], "Turn his head 30° right.", guidance=g, seed=2)
    assert np.array_equal(a.canvas_image, b.canvas_image) and not np.array_equal(
        a.canvas_image, c.canvas_image
    )
    assert a.panel(to_canvas(two_men[0])).shape == (512, 1536, 3)


def test_batch_requests_from_jsonl_and_shards(
    astronaut: np.ndarray, carphone_frames: list, tmp_path: Path
) -> None:
    from inference.batch import iter_requests
    from training.sample_pairs import write_pairs

    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    lm = np.stack([np.linspace(100, 400, 68), np.linspace(120, 380, 68)], 1)
    rows = [
        {"image": "a.png", "instruction": "Turn her head 30° left.", "id": "x", "seed": 4},
        {"image": "a.png", "instruction": "Smile.", "landmarks": {"landmarks": lm.tolist()}},
    ]
    (tmp_path / "req.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reqs = list(iter_requests(tmp_path / "req.jsonl"))
    assert [r.id for r in reqs] == ["x", "00001"] and reqs[0].seed == 4 and reqs[0].landmarks is None
    assert np.allclose(reqs[1].landmarks, lm) and reqs[1].image.shape == astronaut.shape
    pairs = tmp_path / "pairs"
    write_pairs(pairs, carphone_frames, [(0, 4)])
    (req,) = list(iter_requests(pairs, use_target_landmarks=True))
    assert req.landmarks.shape == (68, 2) and np.allclose(req.landmarks, req.extra["gt_target_landmarks"])
    assert req.landmarks.max() <= 600 and "target" in req.extra


def test_bf16_and_offload_options_run(tiny_run, astronaut: np.ndarray) -> None:
    """The bf16 path (DiT in bfloat16, VAE/tokenizer float32) and the offload switch run on the CPU too."""
    from inference.model import load_run, resolve_dtype
    from inference.pipeline import LaToEditor

    run, cfg, _ = tiny_run
    bundle = load_run(run, cfg, dtype="bfloat16", offload=True)
    assert (
        bundle.dit.img_in.weight.dtype == torch.bfloat16
        and next(bundle.vae.parameters()).dtype == torch.float32
    )
    res = LaToEditor(bundle).edit(astronaut, "Turn her head 30° left.", guidance=GuidanceConfig(steps=2))
    assert res.image.shape == astronaut.shape and res.image.std() > 0
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


REFERENCE = Path(__file__).parent / "data" / "reference"


def _release_config(tmp_path: Path) -> Path:
    """A release config over the reference goldens' tiny files (release formats; no learned u_f)."""
    meta = json.loads((REFERENCE / "goldens.json").read_text())
    d, v = meta["dit"], meta["vae"]
    dit_cfg = dict(
        in_channels=d["in_channels"], vec_in_dim=d["vec_in_dim"], context_in_dim=d["context_in_dim"],
        hidden_size=d["hidden_size"], num_heads=d["num_heads"], depth=d["depth"],
        depth_single_blocks=d["depth_single_blocks"], axes_dim=d["axes_dim"], text_dim=meta["text_dim"],
        connector_heads=meta["connector_heads"], connector_depth=meta["connector_depth"],
        landmark_dim=meta["tokenizer"]["code_dim"],
    )  # fmt: skip
    cfg = {
        "root": str(REFERENCE),
        "size": 64,  # size_level: a ~64^2-pixel source keeps the tiny DiT fast
        "dit": {"path": "dit.safetensors", "landmark_adapter": "landmark_in.pth", "config": dit_cfg},
        "lora": "lora.safetensors",
        "vae": {
            "path": "vae.safetensors",
            "config": {k: v[k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels")},
        },
        "text_encoder": {"kind": "bytes", "max_length": 16},
        "tokenizer": {"path": "tokenizer.safetensors"},
    }
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_hfl_edit_with_release_files_runs_the_release_guidance(astronaut: np.ndarray, tmp_path: Path) -> None:
    """No guidance flags + release files (no learned unconditional tokens): text CFG 4 with the landmarks
    in both branches, on the release's aspect-preserving canvas; asking for landmark CFG is an error."""
    from typer.testing import CliRunner

    from hfl.cli import app

    cfg = _release_config(tmp_path)
    face = astronaut[20:420, 60:360]  # 300 x 400 (w x h): the release canvas keeps 3:4
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    lm = tmp_path / "target.json"
    pts = np.stack([np.linspace(150, 360, 68), np.linspace(140, 400, 68)], 1)
    lm.write_text(json.dumps({"landmarks": pts.tolist()}))
    out = tmp_path / "out" / "edit.png"
    args = ["edit", "--image", str(img), "--instruction", "Make her smile.", "-o", str(out)]
    args += ["--release", str(cfg), "--landmarks", str(lm), "--steps", "2", "--seed", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads((out.parent / "edit_edit.jsonl").read_text())
    assert rec["guidance"]["text_scale"] == 4.0 and rec["guidance"]["landmark_scale"] == 1.0
    edited = cv2.imread(str(out))
    assert edited.shape == face.shape
    res = CliRunner().invoke(app, args + ["--landmark-scale", "4"])
    assert res.exit_code == 2 and "no learned unconditional landmark tokens" in res.output
    res = CliRunner().invoke(app, args + ["--landmark-scale", "4", "--uncond", "zero"])
    assert res.exit_code == 0, res.output


def test_inference_and_training_never_import_each_other() -> None:
    """Shared pieces live in hfl/ (hfl.lato.build, hfl.recipes, hfl.predictor): one direction of imports."""
    import ast

    root = Path(__file__).resolve().parents[1]
    bad = []
    for pkg, other in (("inference", "training"), ("training", "inference")):
        for path in sorted((root / pkg).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad += [f"{path.name}: {n}" for n in names if n == other or n.startswith(other + ".")]
    assert not bad, bad


def test_recipes_are_validated_before_any_work(tmp_path: Path) -> None:
    """Unknown keys and wrong types in a LaTo recipe or a release config: one error listing them all."""
    from hfl.recipes import (
        RecipeError,
        load_recipe,
        validate_lato_recipe,
        validate_recipe,
        validate_release_config,
    )
    from inference.commands import ModelArgs, load_model

    for path in sorted(RECIPE.parent.glob("*.yaml")):  # every shipped recipe is valid
        kind = next(k for k in ("lato", "tokenizer", "predictor", "captioner") if path.stem.startswith(k))
        validate_recipe(kind, load_recipe(path))
    with pytest.raises(RecipeError, match="data.jiter: unknown key"):
        validate_recipe("tokenizer", {"data": {"train": "x", "jiter": 0.1}})
    root = Path(__file__).resolve().parents[1]
    validate_release_config(load_recipe(root / "inference" / "lato_release.yaml"))
    bad = yaml.safe_load(RECIPE.read_text())
    bad["timestep_shfit"] = 2.0
    bad["lora"]["rank"] = "eight"
    bad["dit"]["config"]["hiden_size"] = 64
    with pytest.raises(RecipeError) as err:
        validate_lato_recipe(bad)
    msg = str(err.value)
    assert "timestep_shfit: unknown key (did you mean 'timestep_shift'?)" in msg
    assert "lora.rank: expected int" in msg and "dit.config" in msg and "hiden_size" in msg
    cfg = yaml.safe_load(_release_config(tmp_path).read_text())
    cfg["canvs"] = "release"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RecipeError, match="canvs: unknown key"):
        load_model(ModelArgs(release=str(tmp_path / "bad.yaml")))


def test_release_face_config_runs_fan_on_the_bgr_canvas(tmp_path: Path) -> None:
    """face.fan_path (relative to root) selects FAN; it sees the 512 canvas in BGR order, as the release."""
    from inference.commands import ModelArgs, load_model
    from inference.pipeline import LaToEditor

    cfg = yaml.safe_load(_release_config(tmp_path).read_text())
    cfg["face"] = {"fan_path": "2DFAN4.zip"}
    (tmp_path / "fan.yaml").write_text(yaml.safe_dump(cfg))
    bundle = load_model(ModelArgs(release=str(tmp_path / "fan.yaml")))
    assert bundle.face == {"fan_path": str(REFERENCE / "2DFAN4.zip"), "landmarker": "fan"}
    assert bundle.canvas == "release" and bundle.vae_sample

    class Recorder:
        def find(self, image):
            self.seen = image
            return None

    rec = Recorder()
    canvas = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert LaToEditor(bundle, faces=rec).source_landmarks(canvas) is None
    assert np.array_equal(rec.seen, canvas[..., ::-1])
