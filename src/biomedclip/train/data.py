"""Stream the train shards with webdataset: resampled shards, a shuffle buffer, worker processes.

Every stream is a pure function of (seed, epoch, rank), as in open_clip's resampled mode: each
rank draws shards with replacement from a seeded RNG, shuffles samples through a seeded buffer,
and augments each sample under a seed of its own. So an epoch is the same on any machine and with
any number of loader workers, several nodes need no shard bookkeeping, and a resumed run skips
exactly the batches already trained on (without decoding them) and then sees what an
uninterrupted run would have. One loader serves the whole run: workers start once.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class ShardError(RuntimeError):
    """A shard is missing, unreadable or holds a sample without image or caption (named)."""


def stream_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def train_shards(shards_dir: Path) -> tuple[list[str], int]:
    """The train split's shard paths and sample count (from sizes.json), checked to exist."""
    folder = shards_dir / "train"
    sizes_path = folder / "sizes.json"
    try:
        sizes = json.loads(sizes_path.read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(f"{sizes_path}: cannot read the shard sizes ({exc}); run the shard stage") from None
    if not sizes:
        raise ShardError(f"{sizes_path}: the train split has no shards")
    try:  # the shard manifest records each shard's size: a copy cut short is caught here
        recorded = {s["path"]: s["bytes"] for s in
                    json.loads((shards_dir / "manifest.json").read_text())["splits"]["train"]["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    urls = []
    for name in sorted(sizes):
        path = folder / name
        if not path.is_file():
            raise ShardError(f"train shard {path} is missing (listed in {sizes_path})")
        expected = recorded.get(f"train/{name}")
        if expected is not None and path.stat().st_size != expected:
            raise ShardError(f"train shard {path} has {path.stat().st_size} bytes, the shard manifest "
                             f"records {expected}: incomplete or modified (re-run the shard stage)")
        urls.append(str(path))
    return urls, sum(int(n) for n in sizes.values())


def _raise_naming_shard(exc: Exception) -> bool:
    if isinstance(exc, ShardError):
        raise exc
    source = next((a for a in reversed(exc.args) if isinstance(a, str) and a.endswith(".tar")), None)
    raise ShardError(f"cannot read shard {source or '(unknown)'}: {exc.args[0] if exc.args else exc!r}") from exc


class ShardStream(IterableDataset):
    """The (images, texts) micro-batches of one rank, from global batch `start` to `total`.

    Batch g is batch j = g mod B of epoch g div B (B batches per epoch), drawn from that epoch's
    stream of this rank: the content of a batch depends on (seed, epoch, rank, j) only, not on
    the number of loader workers or where a run resumed. Worker w of W yields batches start + w,
    start + w + W, ... (the DataLoader takes them round-robin, so in order), reading but not
    decoding the batches in between.
    """

    def __init__(self, urls: list[str], *, seed: int, rank: int, batch_size: int, batches_per_epoch: int,
                 start: int, total: int, shuffle_buffer: int, preprocess: Callable, tokenizer: Callable) -> None:
        self.urls, self.seed, self.rank = urls, seed, rank
        self.batch_size, self.batches_per_epoch, self.start, self.total = batch_size, batches_per_epoch, start, total
        self.shuffle_buffer, self.preprocess, self.tokenizer = shuffle_buffer, preprocess, tokenizer

    def _urls(self, rng: random.Random) -> Iterator[dict[str, str]]:
        while True:  # resampled: shards drawn with replacement, forever; the epoch length stops it
            yield {"url": rng.choice(self.urls)}

    def _epoch_samples(self, epoch: int) -> tuple[int, Iterator[dict[str, Any]]]:
        base = stream_seed(self.seed, epoch, self.rank)
        samples = wds.tarfile_to_samples(handler=_raise_naming_shard)(self._urls(random.Random(base)))
        return base, wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, seed=base + 1)(samples)

    def _decode(self, sample: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if "jpg" not in sample or "txt" not in sample:
            raise ShardError(f"shard {sample.get('__url__')}: sample {sample.get('__key__')} lacks "
                             f"jpg or txt (has {sorted(k for k in sample if not k.startswith('__'))})")
        with torch.random.fork_rng(devices=[]):  # this sample's augmentation; the caller's RNG untouched
            # The CPU generator only: the augmentation draws from it and fork_rng restores it.
            # torch.manual_seed would also reseed every accelerator's generator, which fork_rng
            # does not restore (with workers: 0 on a GPU, each batch's dropout seeded by its last
            # sample), and where none is initialised it formats a stack trace to queue that
            # (measured here: 0.4 ms a sample at the top of the stack, 2 ms 100 frames deep, as
            # under a Prefect task; 0.016 ms for the CPU generator alone).
            torch.default_generator.manual_seed(seed)
            with Image.open(io.BytesIO(sample["jpg"])) as image:
                pixels = self.preprocess(image.convert("RGB"))
        text = self.tokenizer([sample["txt"].decode("utf-8")])[0]
        return pixels, text

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        current, base, samples, taken = None, 0, iter(()), 0
        for g in range(self.start + worker, self.total, workers):
            epoch, j = divmod(g, self.batches_per_epoch)
            if epoch != current:
                (base, samples), current, taken = self._epoch_samples(epoch), epoch, 0
            for _ in range((j - taken) * self.batch_size):  # other workers' batches, or done before a resume
                next(samples)
            chunk = [next(samples) for _ in range(self.batch_size)]
            taken = j + 1
            decoded = [self._decode(s, stream_seed(base, j * self.batch_size + i)) for i, s in enumerate(chunk)]
            yield torch.stack([d[0] for d in decoded]), torch.stack([d[1] for d in decoded])


def _single_threaded_worker(_: int) -> None:
    """Loader workers decode and augment one sample at a time: intra-op threads there would only
    compete with the training process's for the same cores."""
    torch.set_num_threads(1)


def loader(dataset: ShardStream, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                      # spawn: workers start clean, not as forks of a process with the orchestrator's
                      # threads and handlers (forked workers of a Prefect flow exited with status 1)
                      prefetch_factor=4 if workers else None, multiprocessing_context="spawn" if workers else None,
                      worker_init_fn=_single_threaded_worker if workers else None)
