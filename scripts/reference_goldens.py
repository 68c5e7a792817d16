"""Reference goldens: small random models in the official release's formats, run through the release's own
modules, saved as inputs + outputs for hfl's tests (``tests/test_lato_reference.py``).

    python scripts/reference_goldens.py --release /path/to/landmark-tokenized-dit \
        --step1x /path/to/Step1X-Edit [--out tests/data/reference]

The release (alibaba/landmark-tokenized-dit) and Step1X-Edit (stepfun-ai/Step1X-Edit) are imported from
the checkouts given, never copied into this repository. What cannot run on a CPU is stubbed, and only that:

- ``flash_attn`` (the DiT's attention mode ``"flash"``) -> the same modules' ``"torch"`` mode (SDPA);
- ``liger_kernel``'s fused RMSNorm -> the release's own ``RMSNorm.rms_norm`` (same formula, float32);
- ``torch.compile`` decorators -> identity (no C compiler needed);
- ``torchvision`` (no CPU build of the pinned torch is installable here) -> ``ToPILImage`` / ``to_tensor``
  / ``to_pil_image`` with torchvision's formulas, for the release's inference script and ``qwen_vl_utils``;
- CUDA placement in the text conditioner (``.to("cuda")``, ``torch.cuda.current_device()``) -> the CPU,
  and its Qwen2.5-VL model -> a recorder returning a fixed embedding of the input ids (the goldens
  check the preprocessing, not the VLM). The tokenizer is ``hfl.lato.qwen_tiny`` (Qwen's ids where the
  release reads them), since Qwen's own files cannot be downloaded here.

Everything is float32 and seeded; the outputs are written to ``--out`` (weights in the release's formats,
``goldens.safetensors`` with inputs and reference outputs, ``goldens.json`` with configs, schedules,
token ids and the commits of both checkouts).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

# Tiny geometry shared with the tests (tests/test_lato_reference.py reads it from goldens.json).
DIT = dict(
    in_channels=16,
    out_channels=16,
    vec_in_dim=768,
    context_in_dim=64,
    hidden_size=64,
    mlp_ratio=4.0,
    num_heads=4,
    depth=2,
    depth_single_blocks=2,
    axes_dim=[4, 6, 6],
    theta=10_000,
    qkv_bias=True,
)
TEXT_DIM, CONNECTOR_HEADS, CONNECTOR_DEPTH = 32, 4, 2
TOKENIZER = dict(channels=[32, 64], code_dim=64, codebook_size=128)
VAE = dict(ch=32, ch_mult=[1, 1], num_res_blocks=1, z_channels=4, scale_factor=0.3611, shift_factor=0.1159)
INSTRUCTIONS = [
    "Make her smile.",
    "Don't frown; make him 'grin' widely",
    'Write "OPEN NOW" on the sign and raise the eyebrows',
    "“Hello there,” she says with her mouth open!",
    "Turn the head 30° left",
]


# ----------------------------------------------------------------------------- stubs


def _stub_modules() -> None:
    """Install the CPU stand-ins listed in the module docstring (before importing the release)."""
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)  # type: ignore[assignment]

    liger = types.ModuleType("liger_kernel")
    ops = types.ModuleType("liger_kernel.ops")
    rms = types.ModuleType("liger_kernel.ops.rms_norm")

    class LigerRMSNormFunction:  # noqa: D401 - stand-in
        @staticmethod
        def apply(x, weight, eps, offset=0.0, casting_mode="gemma", in_place=True):
            xf = x.float()
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
            return (y * (offset + weight.float())).to(x.dtype)

    rms.LigerRMSNormFunction = LigerRMSNormFunction
    sys.modules.update({"liger_kernel": liger, "liger_kernel.ops": ops, "liger_kernel.ops.rms_norm": rms})

    try:
        import torchvision  # noqa: F401
    except Exception:
        # transformers decides once whether torchvision exists: let it see the truth before the stub goes in
        import transformers
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration  # noqa: F401
        from transformers.image_utils import load_image  # noqa: F401
        from transformers.utils import import_utils

        assert not import_utils.is_torchvision_available()
        del transformers
        from PIL import Image

        def to_pil_image(pic):
            arr = pic
            if isinstance(pic, torch.Tensor):
                if pic.is_floating_point():
                    pic = pic.mul(255).byte()
                arr = pic.permute(1, 2, 0).cpu().numpy()
            return Image.fromarray(np.ascontiguousarray(arr))

        def to_tensor(img):
            a = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
            return a.float().div(255)

        class ToPILImage:
            def __call__(self, pic):
                return to_pil_image(pic)

        class InterpolationMode:
            BICUBIC = "bicubic"
            BILINEAR = "bilinear"
            NEAREST = "nearest"

        import importlib.machinery

        tv = types.ModuleType("torchvision")
        tv.__version__ = "0.0.0+stub"
        tr = types.ModuleType("torchvision.transforms")
        fn = types.ModuleType("torchvision.transforms.functional")
        io = types.ModuleType("torchvision.io")
        tr.ToPILImage, tr.InterpolationMode, tr.functional = ToPILImage, InterpolationMode, fn
        fn.to_pil_image, fn.to_tensor = to_pil_image, to_tensor
        tv.transforms, tv.io = tr, io
        for m in (tv, tr, fn, io):  # importable, but with no installed distribution behind it
            m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
        sys.modules.update(
            {
                "torchvision": tv,
                "torchvision.transforms": tr,
                "torchvision.transforms.functional": fn,
                "torchvision.io": io,
            }
        )


def _route_flash_to_torch() -> None:
    """The DiT's attention runs in mode 'flash'; send it to the same function's 'torch' (SDPA) mode."""
    import modules.attention as attn_mod
    import modules.layers as layers

    for mod in (attn_mod, layers):
        orig = mod.attention

        def routed(q, k, v, mode="flash", _orig=orig, **kw):
            return _orig(q, k, v, mode="torch" if mode == "flash" else mode, **kw)

        mod.attention = routed


def _import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _commit(repo: Path) -> str:
    try:
        return subprocess.check_output(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except Exception:
        return "unknown (not a git checkout)"


# ----------------------------------------------------------------------------- random weights


@torch.no_grad()
def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter random (zero-initialised gates too, so no branch is silently off)."""
    for name, p in model.named_parameters():
        if name.endswith("scale_factor"):
            p.copy_(-0.91 + 0.05 * torch.randn(p.shape, generator=gen))
        elif p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p[0].numel()))
        elif name.endswith(("scale", "weight")):  # norm scales
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        p.copy_(p.half().float())  # stored as float16: the goldens use exactly the stored values


def half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float16 copies (exact: :func:`randomize` rounds every weight to float16 first)."""
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def face_points(gen: torch.Generator, batch: int) -> torch.Tensor:
    """(B, 68, 2) points on the 512 canvas, spread like a face (jitter on a fixed layout)."""
    base = torch.stack(
        [
            256 + 150 * torch.cos(torch.linspace(0, 6.283, 68)),
            256 + 170 * torch.sin(torch.linspace(0, 9.0, 68)),
        ],
        -1,
    )
    return base[None] + 12.0 * torch.randn(batch, 68, 2, generator=gen)


# ----------------------------------------------------------------------------- goldens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", required=True, type=Path, help="landmark-tokenized-dit checkout")
    ap.add_argument("--step1x", required=True, type=Path, help="Step1X-Edit checkout")
    ap.add_argument("--out", type=Path, default=Path("tests/data/reference"))
    ap.add_argument(
        "--release-commit", default=None, help="commit of --release when it is not a git checkout"
    )
    ap.add_argument("--step1x-commit", default=None, help="commit of --step1x when it is not a git checkout")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _stub_modules()
    from safetensors.torch import save_file

    g: dict[str, torch.Tensor] = {}
    meta: dict = {
        "release_commit": args.release_commit or _commit(args.release),
        "step1x_commit": args.step1x_commit or _commit(args.step1x),
        "dit": DIT,
        "text_dim": TEXT_DIM,
        "connector_heads": CONNECTOR_HEADS,
        "connector_depth": CONNECTOR_DEPTH,
        "tokenizer": TOKENIZER,
        "vae": VAE,
    }
    gen = torch.Generator().manual_seed(1234)

    # ---------------- Step1X-Edit checkout: plain DiT (landmark_mode "none"), VAE, schedule, conditioner
    sys.path.insert(0, str(args.step1x))
    import modules.autoencoder as s1x_ae
    import modules.connector_edit as s1x_conn
    import modules.model_edit as s1x_model
    import sampling as s1x_sampling

    _route_flash_to_torch()
    s1x_cond = _import_file("s1x_conditioner", args.step1x / "modules" / "conditioner.py")
    step1x_mods = (s1x_ae, s1x_conn, s1x_model, s1x_sampling)
    for name in [m for m in list(sys.modules) if m == "modules" or m.startswith(("modules.", "library"))]:
        sys.modules.pop(name)
    sys.modules.pop("sampling", None)
    sys.path.remove(str(args.step1x))

    # ---------------- release checkout
    sys.path.insert(0, str(args.release))
    import modules.connector_edit as conn
    import modules.model_edit as model_edit
    import sampling as rel_sampling
    from library import lora_module, step1x_utils
    from modules.landmark_tokenizer import LM_VQVAE, Decoder, Encoder, VectorQuantizer

    _route_flash_to_torch()
    inference = _import_file("lato_inference", args.release / "3_lato_inference.py")

    # tokenizer
    with torch.no_grad():
        c = TOKENIZER
        lm = LM_VQVAE(
            Encoder(2, c["channels"], c["code_dim"]),
            Decoder(c["code_dim"], c["channels"][::-1], 2),
            VectorQuantizer(c["codebook_size"], c["code_dim"], is_train=False),
        ).eval()
        randomize(lm, gen)
        lm.vq.codebook.copy_(
            (torch.randn(c["codebook_size"], c["code_dim"], generator=gen) * 0.6).half().float()
        )
        save_file(half(lm.state_dict()), str(out / "tokenizer.safetensors"))
        pts = face_points(gen, 3)
        g["tok.points"] = pts
        g["tok.latents"] = lm.encoder((2.0 * pts / 512 - 1).permute(0, 2, 1)).permute(0, 2, 1).contiguous()
        g["tok.tokens"] = inference.encode_landmarks_to_latents(lm, pts).permute(0, 2, 1).contiguous()
        flat = g["tok.latents"].reshape(-1, c["code_dim"])
        g["tok.indices"] = lm.vq.quantize(flat).view(3, 68)
        g["tok.recon"] = lm(2.0 * pts / 512 - 1)[0].contiguous()

    # DiT (release, with landmark_in) sharing its base weights with the Step1X-Edit DiT
    def build(module_edit, connector_mod):
        with torch.no_grad():
            m = module_edit.Step1XEdit(module_edit.Step1XParams(**DIT))
            m.connector = connector_mod.Qwen2Connector(
                in_channels=TEXT_DIM,
                hidden_size=DIT["context_in_dim"],
                heads_num=CONNECTOR_HEADS,
                depth=CONNECTOR_DEPTH,
                dtype=torch.float32,
            )
        return m.float().eval()

    dit = build(model_edit, conn)
    randomize(dit, gen)
    sd = {k: v.contiguous() for k, v in dit.state_dict().items()}
    lm_in = {"weight": sd.pop("landmark_in.weight"), "bias": sd.pop("landmark_in.bias")}
    save_file(half(sd), str(out / "dit.safetensors"))
    torch.save(half(lm_in), out / "landmark_in.pth")

    B, L = 2, 12
    text = torch.randn(B, L, TEXT_DIM, generator=gen)
    mask = torch.zeros(B, L, dtype=torch.long)
    mask[0, :10], mask[1, :7] = 1, 1
    g["dit.text"], g["dit.mask"] = text, mask

    # connector alone
    with torch.no_grad():
        for i, ts in enumerate(([0.93, 0.41], [1.0, 0.02])):
            t = torch.tensor(ts)
            txt, y = dit.connector(text, t, mask)
            g[f"conn.{i}.t"], g[f"conn.{i}.txt"], g[f"conn.{i}.vec"] = t, txt, y

    # full DiT forward: square and non-square grids, several timesteps
    lm_pts = face_points(gen, B)
    g["dit.landmarks"] = lm_pts
    with torch.no_grad():
        tokens = inference.encode_landmarks_to_latents(lm, lm_pts)  # (B, d, 68)
    g["dit.landmark_tokens"] = tokens.permute(0, 2, 1).contiguous()
    cases = [((4, 4), [0.93, 0.41]), ((4, 6), [1.0, 0.02]), ((4, 6), [0.6, 0.25])]
    meta["dit_cases"] = []
    for i, ((gh, gw), ts) in enumerate(cases):
        n = gh * gw
        noisy = torch.randn(B, n, DIT["in_channels"], generator=gen)
        ref = torch.randn(B, n, DIT["in_channels"], generator=gen)
        img_ids = step1x_utils.prepare_img_ids(B, gh, gw)
        lm_ids = step1x_utils.prepare_landmark_ids(512 / gh, lm_pts)
        t = torch.tensor(ts)
        with torch.no_grad():
            pred = dit(
                img=torch.cat([noisy, ref], 1),
                landmark_latents=tokens,
                img_ids=torch.cat([img_ids, img_ids], 1),
                landmark_ids=lm_ids,
                txt_ids=torch.zeros(B, L, 3),
                timesteps=t,
                llm_embedding=text,
                t_vec=t,
                mask=mask,
            )
        g[f"dit.{i}.noisy"], g[f"dit.{i}.source"], g[f"dit.{i}.t"] = noisy, ref, t
        g[f"dit.{i}.velocity"] = pred[:, :n].contiguous()
        meta["dit_cases"].append({"grid_hw": [gh, gw], "timesteps": ts})

    # Step1X-Edit DiT (no landmark stream) on the same base weights
    s1x_dit = build(s1x_model, s1x_conn)
    missing = s1x_dit.load_state_dict(sd, strict=True)
    assert not missing.missing_keys
    gh, gw = 4, 6
    n = gh * gw
    img_ids = step1x_utils.prepare_img_ids(B, gh, gw)
    with torch.no_grad():
        pred = s1x_dit(
            img=torch.cat([g["dit.1.noisy"], g["dit.1.source"]], 1),
            img_ids=torch.cat([img_ids, img_ids], 1),
            txt_ids=torch.zeros(B, L, 3),
            timesteps=g["dit.1.t"],
            llm_embedding=text,
            t_vec=g["dit.1.t"],
            mask=mask,
        )
    g["step1x.velocity"] = pred[:, :n].contiguous()

    # kohya LoRA merge (release lora_module): ranks 4, one alpha = 0, full-rank landmark_in, txt_in (merged
    # through kohya's input-layer filters) and a key naming no module (ignored by the merge).
    lora: dict[str, torch.Tensor] = {}
    targets = [
        (name, mod)
        for name, mod in dit.named_modules()
        if isinstance(mod, torch.nn.Linear) and name.startswith(("double_blocks.", "single_blocks."))
    ]
    targets += [("landmark_in", dit.landmark_in), ("txt_in", dit.txt_in), ("not_a_module", dit.txt_in)]
    for j, (name, mod) in enumerate(targets):
        rank = mod.in_features if name == "landmark_in" else 4
        base = "lora_unet_" + name.replace(".", "_")
        lora[f"{base}.lora_down.weight"] = torch.randn(rank, mod.in_features, generator=gen) * 0.05
        lora[f"{base}.lora_up.weight"] = torch.randn(mod.out_features, rank, generator=gen) * 0.05
        lora[f"{base}.alpha"] = torch.tensor(
            0.0 if j == 1 else (float(rank) if name == "landmark_in" else 2.0)
        )
    save_file(lora, str(out / "lora.safetensors"))
    meta["lora_zero_alpha_module"] = targets[1][0]
    merged = build(model_edit, conn)
    merged.load_state_dict({**sd, **{f"landmark_in.{k}": v for k, v in lm_in.items()}})
    net, _ = lora_module.create_network_from_weights(1.0, None, None, [], merged, dict(lora), True)
    net.merge_to([], merged, dict(lora))
    msd = merged.state_dict()
    for key in ("landmark_in.weight", f"{targets[1][0]}.weight", f"{targets[0][0]}.weight", "txt_in.weight"):
        g[f"lora.{key}"] = msd[key].contiguous()
    gh, gw = cases[0][0]
    img_ids = step1x_utils.prepare_img_ids(B, gh, gw)
    with torch.no_grad():
        pred = merged(
            img=torch.cat([g["dit.0.noisy"], g["dit.0.source"]], 1),
            landmark_latents=tokens,
            img_ids=torch.cat([img_ids, img_ids], 1),
            landmark_ids=step1x_utils.prepare_landmark_ids(512 / gh, lm_pts),
            txt_ids=torch.zeros(B, L, 3),
            timesteps=g["dit.0.t"],
            llm_embedding=text,
            t_vec=g["dit.0.t"],
            mask=mask,
        )
    g["lora.velocity"] = pred[:, : gh * gw].contiguous()

    # schedules (release sampling.get_schedule; Step1X-Edit's is the same function)
    meta["schedules"] = []
    for steps, seq, shift in (
        (28, 1024, True),
        (28, 256, True),
        (28, 4096, True),
        (4, 24, True),
        (8, 24, False),
    ):
        a = rel_sampling.get_schedule(steps, seq, shift=shift)
        b = step1x_mods[3].get_schedule(steps, seq, shift=shift)
        assert a == b
        meta["schedules"].append({"steps": steps, "seq_len": seq, "shift": shift, "timesteps": a})

    # one and two release-guidance sampling steps (ImageGenerator.prepare + denoise, cfg 4.0)
    gh, gw = 4, 6
    lat_h, lat_w = 2 * gh, 2 * gw
    x = torch.randn(1, DIT["in_channels"] // 4, lat_h, lat_w, generator=gen)
    src = torch.randn(1, DIT["in_channels"] // 4, lat_h, lat_w, generator=gen)
    txt2 = torch.randn(2, L, TEXT_DIM, generator=gen)
    mask2 = torch.zeros(2, L, dtype=torch.long)
    mask2[0, :9], mask2[1, :5] = 1, 1
    lm1 = lm_pts[:1]

    class _FakeEncoder:
        def __call__(self, prompts, images):
            assert len(prompts) == 2 and prompts[1] == ""
            return txt2, mask2

    igen = inference.ImageGenerator.__new__(inference.ImageGenerator)
    igen.offload, igen.dit, igen.llm_encoder, igen.device = False, dit, _FakeEncoder(), torch.device("cpu")
    with torch.no_grad():
        lat1 = inference.encode_landmarks_to_latents(lm, lm1)
        ts = rel_sampling.get_schedule(28, gh * gw, shift=True)
        inputs = igen.prepare(
            ["edit", ""],
            torch.cat([x, x]),
            ref_image=torch.cat([src, src]),
            ref_image_raw=torch.zeros(2, 3, 8, 8),
            landmark_coordinates=torch.cat([lm1, lm1]),
        )
        for k, steps in ((1, ts[:2]), (2, ts[:3])):
            res = igen.denoise(
                **inputs,
                landmark_latents=torch.cat([lat1, lat1]),
                cfg_guidance=4.0,
                timesteps=steps,
                timesteps_truncate=1.0,
            )
            g[f"sample.after_{k}"] = res.contiguous()
    g["sample.noise_latent"], g["sample.source_latent"] = x, src
    g["sample.text"], g["sample.mask"], g["sample.landmarks"] = txt2, mask2, lm1.clone()
    meta["sample"] = {"grid_hw": [gh, gw], "cfg": 4.0, "timesteps": ts[:3]}

    # FLUX VAE (Step1X-Edit autoencoder; the release's is the same file): moments, posterior sample, decode
    with torch.no_grad():
        ae = s1x_ae.AutoEncoder(resolution=256, in_channels=3, out_ch=3, **VAE).eval()
        randomize(ae, gen)
        save_file(half(ae.state_dict()), str(out / "vae.safetensors"))
        img = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1
        g["vae.image"] = img
        g["vae.moments"] = ae.encoder(img)
        torch.manual_seed(7)
        g["vae.posterior_sample"] = ae.encode(img)  # DiagonalGaussian(sample=True), as the release runs it
        z = torch.randn(1, VAE["z_channels"], 16, 24, generator=gen)
        g["vae.z"], g["vae.decoded"] = z, ae.decode(z)

    # text-encoder preprocessing (Step1X-Edit conditioner, identical in the release)
    meta["text"] = _text_goldens(s1x_cond, out, g, gen)
    meta["step1x_prefix"] = s1x_cond.Qwen25VL_7b_PREFIX

    save_file({k: v.contiguous() for k, v in g.items()}, str(out / "goldens.safetensors"))
    (out / "goldens.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


def fake_hidden_states(input_ids: torch.Tensor) -> torch.Tensor:
    """The recorder's 'last hidden state': 4 sinusoids of the token id (tests recompute it)."""
    f = torch.tensor([1e-3, 7e-3, 3e-2, 1.1e-1])
    return torch.sin(input_ids[..., None].double() * f).float().to(torch.bfloat16)


def _text_goldens(cond_mod, out: Path, g: dict, gen: torch.Generator) -> list[dict]:
    """Run ``Qwen25VL_7b_Embedder.forward`` with the tiny processor and a recording stand-in model."""
    import tempfile

    from hfl.lato.qwen_tiny import load_tiny_qwen_processor, write_tiny_qwen_processor

    folder = write_tiny_qwen_processor(Path(tempfile.mkdtemp()) / "qwen_tiny")
    tiny = load_tiny_qwen_processor(folder)

    class _Processor:
        """transformers 4.57 (the release's pin) tokenises text-only processor calls without the image-token
        check that transformers 5 adds; keep that behaviour for the conditioner's re-tokenisation."""

        def __getattr__(self, name):
            return getattr(tiny, name)

        def __call__(self, text=None, images=None, videos=None, **kw):
            if images is None and videos is None:
                return tiny.tokenizer(
                    text, padding=kw.get("padding", False), return_tensors=kw.get("return_tensors")
                )
            return tiny(text=text, images=images, videos=videos, **kw)

    processor = _Processor()
    calls: list[dict] = []

    class _Out(dict):
        __getattr__ = dict.__getitem__

    class _Recorder(torch.nn.Module):
        config = types.SimpleNamespace(hidden_size=4)

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw, output_hidden_states):
            calls.append(
                {
                    "input_ids": input_ids[0].tolist(),
                    "attention_mask": attention_mask[0].tolist(),
                    "image_grid_thw": image_grid_thw[0].tolist(),
                }
            )
            hs = fake_hidden_states(input_ids)
            return _Out(hidden_states=[hs])

    emb = cond_mod.Qwen25VL_7b_Embedder.__new__(cond_mod.Qwen25VL_7b_Embedder)
    torch.nn.Module.__init__(emb)
    emb.max_length, emb.processor, emb.prefix, emb.model = (
        2048,
        processor,
        cond_mod.Qwen25VL_7b_PREFIX,
        _Recorder(),
    )

    orig_to, orig_dev = torch.Tensor.to, torch.cuda.current_device

    def to_cpu(self, *a, **kw):
        a = tuple("cpu" if (isinstance(x, str) and x.startswith("cuda")) else x for x in a)
        if isinstance(kw.get("device"), str) and kw["device"].startswith("cuda"):
            kw["device"] = "cpu"
        return orig_to(self, *a, **kw)

    cases = []
    sizes = [(512, 512), (432, 608), (608, 432), (512, 512), (384, 672)]
    torch.Tensor.to = to_cpu
    torch.cuda.current_device = lambda: "cpu"
    try:
        for i, (instr, (h, w)) in enumerate(zip(INSTRUCTIONS, sizes, strict=True)):
            rgb = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8)
            calls.clear()
            with torch.no_grad():
                embs, masks = emb([instr], [rgb.permute(2, 0, 1).float() / 255])
            n = int(masks[0].sum())
            g[f"text.{i}.embeddings"] = embs[0, :n].float().contiguous()
            cases.append({"instruction": instr, "image_hw": [h, w], **calls[0], "kept": n})
    finally:
        torch.Tensor.to = orig_to
        torch.cuda.current_device = orig_dev
    return cases


if __name__ == "__main__":
    main()
