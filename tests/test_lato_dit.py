"""LaTo DiT: location-mapped RoPE ids, unconditional-token swap, conditioning modes, full-size geometry,
and a tiny LaTo overfitting one real pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hfl.lato.dit import LaToConfig, LaToDiT
from hfl.lato.rope import EmbedND, image_ids, landmark_ids

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pair_shard(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    """A real pair (two carphone frames, dlib landmarks) in DESIGN.md's pair format."""
    from training.sample_pairs import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs"), carphone_frames, [(0, 3), (4, 7)])


def test_landmark_rope_ids_are_grid_coordinates(pair_shard: Path) -> None:
    import webdataset as wds

    sample = next(iter(wds.WebDataset(str(pair_shard), shardshuffle=False)))
    pts = torch.tensor(json.loads(sample["json"])["tgt"]["landmarks"], dtype=torch.float32)[None]
    h, w = 144, 176  # a non-square image: each axis maps with its own grid size
    gh, gw = h // 16, w // 16
    ids = landmark_ids(pts, (h, w), (gh, gw))
    assert torch.all(ids[..., 0] == 0)
    torch.testing.assert_close(ids[..., 1], pts[..., 1] * gh / h)
    torch.testing.assert_close(ids[..., 2], pts[..., 0] * gw / w)
    # the integer part is the (row, col) of the packed token whose 16 x 16 pixel patch holds the point
    grid = image_ids(1, gh, gw)
    for k in range(68):
        x, y = pts[0, k]
        row, col = int(y // 16), int(x // 16)
        cell = grid[0, row * gw + col]
        assert cell[1] == row and cell[2] == col
        assert torch.equal(ids[0, k, 1:].floor(), cell[1:])
    # a landmark exactly on a patch corner gets the same rotary phase as that image token
    emb = EmbedND(10_000, (4, 6, 6))
    corner = landmark_ids(torch.tensor([[[32.0, 48.0]]]), (h, w), (gh, gw))
    torch.testing.assert_close(emb(corner)[0, 0, 0], emb(grid)[0, 0, 3 * gw + 2])


def test_dit_feeds_location_mapped_ids_to_rope() -> None:
    torch.manual_seed(0)
    model = LaToDiT(LaToConfig.tiny())
    seen = []
    orig = model.pe_embedder.forward
    model.pe_embedder.forward = lambda ids: (seen.append(ids), orig(ids))[1]  # type: ignore[method-assign]
    b, gh, gw, lt = 2, 3, 5, 7
    xy = torch.rand(b, 68, 2) * torch.tensor([80.0, 48.0])
    model(
        torch.randn(b, gh * gw, 64),
        torch.randn(b, gh * gw, 64),
        (gh, gw),
        torch.rand(b),
        torch.randn(b, lt, 32),
        torch.ones(b, lt),
        torch.randn(b, 68, 32),
        xy,
        (48, 80),
    )
    ids = seen[0]
    assert ids.shape == (b, lt + gh * gw + 68 + gh * gw, 3)  # [text | source | landmark | noisy]
    assert torch.all(ids[:, :lt] == 0)
    torch.testing.assert_close(ids[:, lt + gh * gw : lt + gh * gw + 68], landmark_ids(xy, (48, 80), (gh, gw)))
    torch.testing.assert_close(ids[:, lt : lt + gh * gw], ids[:, -gh * gw :])


def test_unconditional_swap_rate_and_content() -> None:
    model = LaToDiT(LaToConfig.tiny(uncond_prob=0.1))
    g = torch.Generator().manual_seed(0)
    mask = torch.cat([model.sample_uncond_mask(1000, generator=g) for _ in range(20)])
    assert abs(mask.float().mean().item() - 0.1) < 0.01  # binomial sd 0.0021 for 20k draws
    tokens = torch.randn(4, 68, 32)
    m = torch.tensor([True, False, True, False])
    z = model.landmark_stream(tokens, m)
    torch.testing.assert_close(z[0], model.landmark_uncond.detach())
    torch.testing.assert_close(z[2], model.landmark_uncond.detach())
    torch.testing.assert_close(z[1], model.landmark_in(tokens[1]))
    never = LaToDiT(LaToConfig.tiny(uncond_prob=0.0)).sample_uncond_mask(1000)
    assert not never.any()


@pytest.mark.parametrize("mode,extra", [("none", 0), ("image", 15), ("tokens", 68)])
def test_conditioning_modes(mode: str, extra: int) -> None:
    model = LaToDiT(LaToConfig.tiny(landmark_mode=mode))
    seen = []
    orig = model.pe_embedder.forward
    model.pe_embedder.forward = lambda ids: (seen.append(ids.shape[1]), orig(ids))[1]  # type: ignore[method-assign]
    b, gh, gw = 1, 3, 5
    kw = {}
    if mode == "tokens":
        kw = dict(
            landmark_tokens=torch.randn(b, 68, 32), landmark_xy=torch.rand(b, 68, 2) * 40, image_hw=(48, 80)
        )
    elif mode == "image":
        kw = dict(landmark_latents=torch.randn(b, gh * gw, 64))
    out = model(
        torch.randn(b, 15, 64),
        torch.randn(b, 15, 64),
        (gh, gw),
        torch.rand(b),
        torch.randn(b, 4, 32),
        torch.ones(b, 4),
        **kw,
    )
    assert out.shape == (b, 15, 64)
    assert seen[0] == 4 + 15 + extra + 15
    assert hasattr(model, "landmark_uncond") == (mode == "tokens")


def test_full_size_geometry_on_meta() -> None:
    with torch.device("meta"):
        model = LaToDiT(LaToConfig())
    c = model.config
    assert (len(model.double_blocks), len(model.single_blocks), c.hidden_size, c.num_heads) == (
        19,
        38,
        3072,
        24,
    )
    assert c.axes_dim == (16, 56, 56) and sum(c.axes_dim) == c.hidden_size // c.num_heads
    n = sum(p.numel() for p in model.parameters())
    blocks = sum(
        p.numel() for k, p in model.named_parameters() if k.startswith(("double_blocks", "single_blocks"))
    )
    assert 11.8e9 < blocks < 11.9e9  # the 57 FLUX.1 transformer blocks
    assert 12.3e9 < n < 12.6e9  # + Qwen2 connector, embedders, landmark adapter and unconditional tokens
    assert tuple(model.landmark_uncond.shape) == (68, 3072)
    assert tuple(model.landmark_in.weight.shape) == (3072, 3072)


def test_tiny_lato_overfits_one_real_pair(pair_shard: Path) -> None:
    """LoRA + adapter + unconditional tokens on one real pair, fixed noise and times: the flow loss falls."""
    from training.data import ShardStream, make_loader
    from training.lato import add_lora, build_parts, encode_conditions, flow_loss
    from training.lato_data import collate_pairs, pair_decoder

    torch.manual_seed(0)
    cfg = {
        "dit": {"config": {"preset": "tiny"}},
        "vae": {"config": {"preset": "tiny"}},
        "text_encoder": {"kind": "bytes", "max_length": 32},
        "tokenizer": {
            "config": {"channels": [32, 32], "code_dim": 32, "codebook_size": 64, "num_res_blocks": 1}
        },
    }
    parts = build_parts(cfg)
    model = add_lora(parts.dit, rank=8)
    stream = ShardStream([str(pair_shard)], pair_decoder(32, 32), batch_size=1, shuffle_buffer=0)
    batch = next(iter(make_loader(stream, collate_pairs)))
    cond = encode_conditions(parts, batch, torch.device("cpu"))
    cond = {k: (v.expand(4, *v.shape[1:]) if torch.is_tensor(v) else v) for k, v in cond.items()}
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    noise = torch.randn(cond["x0"].shape)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = flow_loss(model, cond, t, noise, uncond_mask=torch.tensor([False, False, False, True]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::6]
    dit = parts.dit
    assert dit.landmark_uncond.grad is not None and dit.landmark_in.weight.grad is not None
