"""Streaming HFL shards with webdataset + DataLoader: shuffling buffers and resumable epochs.

Each epoch's order is a pure function of ``(seed, epoch, rank, worker)``: shards are shuffled with a seeded
RNG, split over ranks (Accelerate processes) and DataLoader workers, and samples pass through a seeded
shuffle buffer. A run resumed after ``k`` batches of an epoch rebuilds the same stream and drops the raw
samples behind those ``k`` batches *before* decoding them, so it continues exactly where it stopped.
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hfl.lato import canvas


def list_shards(spec: str | list[str]) -> list[str]:
    """Tar shards named by a folder, a glob, or a list of either; sorted; error when none exist."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for s in specs:
        s = os.path.expanduser(s)
        if os.path.isdir(s):
            out += glob.glob(os.path.join(s, "**", "*.tar"), recursive=True)
        else:
            out += glob.glob(s)
    out = sorted(set(out))
    if not out:
        raise FileNotFoundError(f"no .tar shards found at {specs}")
    return out


@dataclass
class StreamState:
    """Where the data stream stands: saved in checkpoints."""

    epoch: int = 0
    batches_in_epoch: int = 0


class ShardStream(IterableDataset):
    """One epoch of decoded samples from WebDataset shards.

    Args:
        shards: tar paths.
        decode: raw webdataset sample (dict of bytes) -> training item, or None to drop it.
        batch_size: per-process batch size (to translate skipped batches into skipped samples).
        shuffle_buffer: size of the sample shuffle buffer (0: no shuffling).
        seed: base seed.
        epoch: epoch number (changes the shuffle).
        skip_batches: batches of this epoch already consumed by this process (resume).
        rank, world_size: process index and count; shards are split over processes.
    """

    def __init__(
        self,
        shards: list[str],
        decode: Callable[[dict[str, Any], random.Random], Any],
        batch_size: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        epoch: int = 0,
        skip_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.shards, self.decode, self.batch_size = shards, decode, batch_size
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, epoch
        self.skip_batches, self.rank, self.world_size = skip_batches, rank, world_size

    def _my_shards(self, worker: int, num_workers: int) -> list[str]:
        shards = list(self.shards)
        random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)
        if len(shards) >= self.world_size:
            shards = shards[self.rank :: self.world_size]
        # fewer shards than processes: every process reads all and keeps every world_size-th sample
        return shards[worker::num_workers] if len(shards) >= num_workers else shards

    def __iter__(self) -> Iterator[Any]:
        import webdataset as wds

        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
        stages: list[Any] = [
            wds.SimpleShardList(self._my_shards(worker, num_workers)),
            wds.tarfile_to_samples(),
        ]
        if len(self.shards) < self.world_size:
            stages.append(wds.slice(self.rank, None, self.world_size))
        if len(self.shards) < num_workers:
            stages.append(wds.slice(worker, None, num_workers))
        if self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        # batches are taken round-robin from workers: this worker made batches worker, worker+W, ...
        skip = len(range(worker, self.skip_batches, num_workers)) * self.batch_size
        for i, sample in enumerate(wds.DataPipeline(*stages)):
            if i < skip:
                continue
            # per-sample augmentation RNG: independent of how many samples a resumed run skipped
            item = self.decode(sample, random.Random(f"{self.seed}-{self.epoch}-{sample.get('__key__')}"))
            if item is not None:
                yield item


def make_loader(
    stream: ShardStream, collate: Callable[[list[Any]], Any] | None = None, num_workers: int = 0
) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=stream.batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------- landmark samples


def sample_landmark_sets(sample: dict[str, Any]) -> list[tuple[np.ndarray, int, int, str]]:
    """All (landmarks, width, height, kind) of a frame sample ('frame') or a pair sample ('pair')."""
    meta = json.loads(sample["json"])
    if "face" in meta:
        f = meta["face"]
        return [(np.asarray(f["landmarks"], np.float32), int(f["width"]), int(f["height"]), "frame")]
    out = []
    for side in ("src", "tgt"):
        if side in meta and f"{side}.jpg" in sample:
            w, h = image_size(sample[f"{side}.jpg"])
            out.append((np.asarray(meta[side]["landmarks"], np.float32), w, h, "pair"))
    return out


def image_size(jpg: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(jpg)) as im:
        return im.size


def landmark_decoder(
    crop_scale: tuple[float, float] = (1.9, 1.9), jitter: float = 0.0, flip_prob: float = 0.0
) -> Callable[[dict[str, Any], random.Random], np.ndarray | None]:
    """Decoder for tokenizer training: a sample -> normalised (68, 2) landmarks in [-1, 1].

    Frames map through the face-crop canvas (random ``crop_scale`` in the range and centre ``jitter`` as a
    fraction of the crop side); pair images through the whole-image canvas (``canvas`` module docstring).
    Pair samples contribute their target landmarks (random choice of src/tgt when training with jitter).
    """

    def decode(sample: dict[str, Any], rng: random.Random) -> np.ndarray | None:
        sets = sample_landmark_sets(sample)
        if not sets:
            return None
        pts, w, h, kind = sets[rng.randrange(len(sets))] if jitter > 0 else sets[-1]
        if pts.shape != (canvas.NUM_POINTS, 2):
            return None
        if flip_prob and rng.random() < flip_prob:
            pts = canvas.flip_landmarks(pts, w)
        if kind == "frame":
            s = rng.uniform(*crop_scale)
            shift = (rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter))
            c = canvas.face_crop_canvas(pts, s, shift)
        else:
            c = canvas.image_to_canvas(pts, w, h)
        return canvas.normalise(c)

    return decode


def collate_landmarks(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items)).float()


def epoch_stream(
    shards: list[str],
    decode: Callable[[dict[str, Any]], Any],
    args: Any,
    epoch: int,
    skip: int,
    accelerator: Any,
) -> ShardStream:
    """The ShardStream of one epoch for this Accelerate process (`args`: batch_size, shuffle_buffer, seed)."""
    return ShardStream(
        shards,
        decode,
        args.batch_size,
        args.shuffle_buffer,
        args.seed,
        epoch,
        skip,
        accelerator.process_index,
        accelerator.num_processes,
    )
