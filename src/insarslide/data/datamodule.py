"""The LightningDataModule over a patch data set (``data=`` config group).

Order of operations, as in the thesis: split the stored patches, then (on the
training split only) oversample small landslides, smooth labels, augment and
sample. Normalisation statistics come from valid pixels of the training
split; the LightningModule stores them in its checkpoint.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from insarslide.data.augment import IDENTITY, Augmenter
from insarslide.data.normalization import band_statistics
from insarslide.data.oversample import Sample, SmallLandslideOversampler, crop_windows
from insarslide.data.patchstore import DATASET_FILE, PatchStore
from insarslide.data.samplers import UniformSampler
from insarslide.data.smoothing import SoftLabelCache
from insarslide.contract.spec import BANDS, band_indices, check_band_names
from insarslide.data.splits import RandomSplit, check_no_overlap_leak

log = logging.getLogger(__name__)


class MissingDataSet(FileNotFoundError):
    """``data.root`` holds no patch data set and no builder is configured; the message says what to do."""


class PatchDataset(Dataset):
    """Samples of a :class:`PatchStore`: dict of ``bands`` (C,P,P, NaN kept), ``target`` (soft or hard),
    ``landslide`` (hard labels for metrics), ``valid``, and ``index`` (row of the patch table)."""

    def __init__(self, store: PatchStore, samples: Sequence[Sample], band_idx: Sequence[int],
                 soft_labels: SoftLabelCache | None = None, augment: Augmenter | None = None, crop_size: int = 128):
        self.store = store
        self.samples = list(samples)
        self.band_idx = list(band_idx)
        self.all_bands = list(range(len(BANDS)))
        self.soft_labels = soft_labels
        self.augment = augment
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.samples)

    def _write(self, k: int, slot: dict[str, np.ndarray]) -> int:
        """Write sample ``k`` into ``slot`` (its rows of the batch arrays); returns its patch.

        One copy per array, from the memory-mapped store straight into the
        batch: an oversampling crop is written into the zeroed slot at its
        place, and a flip or rotation is the view of the slot it is written
        through (:meth:`insarslide.data.augment.D4.destination`), never a copy of its own.
        """
        sample = self.samples[k]
        bands, landslide, valid = self.store.views(sample.patch)
        target = self.soft_labels.get(sample.patch) if self.soft_labels is not None else landslide
        d4 = self.augment.draw() if self.augment is not None and self.augment.views else IDENTITY
        pairs = [(slot["landslide"], landslide), (slot["target"], target), (slot["valid"], valid)]
        if self.band_idx == self.all_bands:
            pairs.append((slot["bands"], bands))
        else:  # band by band: indexing with the list would copy the selection first
            pairs += [(slot["bands"][c], bands[b]) for c, b in enumerate(self.band_idx)]
        for out, source in pairs:
            if sample.crop is None:
                _copy_into(d4.destination(out), source)
            else:
                src, dst = crop_windows(out.shape[-1], sample.crop, self.crop_size)
                out.fill(0)  # padding, valid = 0 (the same under any flip)
                _copy_into(d4.destination(out)[(...,) + dst], source[(...,) + src])
        return sample.patch

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {key: value[0] for key, value in self.__getitems__([k]).items()}

    def __getitems__(self, indices: Sequence[int | tuple[int, int]]) -> dict[str, torch.Tensor]:
        """A whole batch, each sample written straight into its slot (the DataLoader's fast path).

        A training draw is ``(sample, augmentation seed)`` (:class:`insarslide.data.samplers.EpochDraws`): the
        augmentation is reseeded per draw, so it depends neither on the worker nor on earlier draws.
        """
        n, c, p = len(indices), len(self.band_idx), self.store.patch_size
        batch = {"bands": torch.empty(n, c, p, p), "target": torch.empty(n, p, p),
                 "landslide": torch.empty(n, p, p, dtype=torch.uint8), "valid": torch.empty(n, p, p, dtype=torch.uint8),
                 "index": torch.empty(n, dtype=torch.long)}
        arrays = {key: batch[key].numpy() for key in ("bands", "target", "landslide", "valid")}
        for slot, draw in enumerate(indices):
            k, augment_seed = draw if isinstance(draw, tuple) else (draw, None)
            if augment_seed is not None and self.augment is not None:
                self.augment.reseed(int(augment_seed))
            batch["index"][slot] = self._write(int(k), {key: a[slot] for key, a in arrays.items()})
            if self.augment is None:
                continue
            if self.augment.views:
                self.augment.radiometric_(batch["bands"][slot])
            else:  # an augmenter that is not a view (Albumentations) transforms the written slot
                masks = [batch[key][slot] for key in ("landslide", "target", "valid")]
                bands, masks = self.augment(batch["bands"][slot], masks)
                batch["bands"][slot].copy_(bands)
                for key, mask in zip(("landslide", "target", "valid"), masks):
                    batch[key][slot].copy_(mask)
        return batch


#: Rows per block when the destination is transposed: a strided write of the
#: whole patch misses the cache on every element; blocks of 32 rows take half the time here.
TRANSPOSED_BLOCK_ROWS = 32


def _copy_into(out: np.ndarray, source: np.ndarray) -> None:
    """``out[...] = source`` (converting the dtype), by blocks of rows when ``out`` is a transposed view."""
    if abs(out.strides[-1]) == out.itemsize:
        out[...] = source
        return
    for r in range(0, source.shape[-2], TRANSPOSED_BLOCK_ROWS):
        out[..., r:r + TRANSPOSED_BLOCK_ROWS, :] = source[..., r:r + TRANSPOSED_BLOCK_ROWS, :]


def collate_batches(batch: Any) -> Any:
    """Batches made by :meth:`PatchDataset.__getitems__` pass through; anything else is collated as usual."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


def _worker_init(worker_id: int) -> None:
    """Seed the worker's global NumPy and Python generators from its torch seed (distinct per worker).

    The project's own draws do not use them: augmentation seeds travel with each
    training draw (:class:`insarslide.data.samplers.EpochDraws`).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class PatchDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        bands: Sequence[str],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        drop_last: bool = True,
        split: Any = None,
        sampler: Any = None,
        oversample: Any = None,
        smoothing_sigma: float = 0.0,
        augment: Augmenter | None = None,
        cache_dir: str | None = None,
        builder: Callable[..., Any] | None = None,
        rebuild: bool = False,
        patch_size: int = 256,
        seed: int = 42,
    ):
        super().__init__()
        self.root = Path(root)
        self.bands = check_band_names(bands)
        self.band_idx = band_indices(self.bands)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.drop_last = drop_last
        self.splitter = split if split is not None else RandomSplit(seed=seed)
        self.sampler = sampler if sampler is not None else UniformSampler()
        self.oversampler = oversample if oversample is not None else SmallLandslideOversampler(enabled=False)
        self.smoothing_sigma = float(smoothing_sigma)
        self.augment = augment.with_bands(self.bands) if augment is not None else None
        self.cache_dir = cache_dir
        self.builder = builder  # data_prep.synthetic.build_synthetic_dataset for the quickstart
        self.rebuild = rebuild
        self.patch_size = patch_size
        self.seed = seed
        self._train_start: tuple[int, int] | None = None  # (epoch, batches done) of a resumed run
        self.store: PatchStore | None = None
        self.split_labels: np.ndarray | None = None
        self.band_mean: np.ndarray | None = None
        self.band_std: np.ndarray | None = None

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        """Let ``builder`` make (or check) the data set; without one, ``root`` must already hold it."""
        if self.builder is not None:
            self.builder(self.root, patch_size=self.patch_size, rebuild=self.rebuild)
        if not (self.root / DATASET_FILE).is_file():
            raise self._missing()

    def check_available(self) -> None:
        """Raise :class:`MissingDataSet` now when no builder can make the missing data set: only reads, so safe
        on every process, and cheap enough to run before a large model is built."""
        if self.builder is None and not (self.root / DATASET_FILE).is_file():
            raise self._missing()

    def _missing(self) -> MissingDataSet:
        return MissingDataSet(
            f"{self.root}: no patch data set ({DATASET_FILE} missing). Build one from scenes with "
            f"'python -m data_prep.patches scenes_dir=SCENES out_dir={self.root}' and pass data.root=..., "
            f"or add experiment=quickstart to train on the embedded simulated data.")

    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        self.store = PatchStore(self.root)
        if self.store.patch_size != self.patch_size:
            log.warning("data set %s has %d px patches; data.patch_size is %d", self.root, self.store.patch_size, self.patch_size)
        if len(self.store) == 0:
            raise ValueError(f"{self.root}: the patch data set is empty")
        check_no_overlap_leak(self.splitter, self.store.table, self.store.patch_size, str(self.root))
        self.split_labels = np.asarray(self.splitter.assign(self.store.table))
        for name in ("train", "val", "test"):
            if not (self.split_labels == name).any():
                raise ValueError(f"{self.root}: split {type(self.splitter).__name__} leaves the "
                                 f"{name} set empty ({len(self.store)} patches); use more data or other fractions")
        crop = self.oversampler.crop_size
        if self.oversampler.enabled and not 0 < crop < self.store.patch_size:
            raise ValueError(f"oversample.crop_size {crop} must be smaller than the patch size {self.store.patch_size} of {self.root}")
        train = np.flatnonzero(self.split_labels == "train")
        pixels = self.store.table["landslide_pixels"].to_numpy()
        samples = self.oversampler.samples(train, pixels, self.store.read_labels)
        self.counts = {"train_patches": int(train.size), "train_samples": len(samples),
                       "val_patches": int((self.split_labels == "val").sum()),
                       "test_patches": int((self.split_labels == "test").sum())}
        log.info("split: %s", self.counts)
        if self.band_mean is None:
            self.band_mean, self.band_std = band_statistics(self.store, train, self.band_idx)
        soft = None
        if self.smoothing_sigma > 0:
            soft = SoftLabelCache(self.store, self.smoothing_sigma, self.cache_dir)
            soft.build()
        self.train_set = PatchDataset(self.store, samples, self.band_idx, soft, self.augment, crop)
        self.val_set = PatchDataset(self.store, [Sample(int(i)) for i in np.flatnonzero(self.split_labels == "val")], self.band_idx)
        self.test_set = PatchDataset(self.store, [Sample(int(i)) for i in np.flatnonzero(self.split_labels == "test")], self.band_idx)

    def split_table(self) -> pd.DataFrame:
        """Which patch went where: event, position and split of every stored patch."""
        table = self.store.table[["event_id", "region", "index", "row", "col", "landslide_pixels"]].copy()
        table["split"] = self.split_labels
        return table

    # ----------------------------------------------------------- dataloaders
    def _world(self) -> tuple[int, int]:
        """(number of processes, rank of this one) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        if not kwargs or kwargs.get("num_replicas", 1) <= 1:
            return 1, 0
        return int(kwargs["num_replicas"]), int(kwargs["rank"])

    def _loader(self, dataset: PatchDataset, batch_size: int, shuffle: bool, sampler=None) -> DataLoader:
        """A loader over ``dataset``; ``shuffle`` marks the training loader (the only shuffled one).

        Training: with ``drop_last``, the last incomplete batch of each process is
        dropped when the epoch holds at least one full batch (a batch of one
        sample breaks BatchNorm in training mode). Evaluation keeps every sample.
        """
        drop_last = False
        if shuffle and self.drop_last:
            processes, _ = self._world()
            per_process = -(-len(sampler if sampler is not None else dataset) // processes)  # DDP pads to equal shares
            drop_last = per_process >= batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=drop_last,
                          persistent_workers=self.persistent_workers and self.num_workers > 0,
                          worker_init_fn=_worker_init, collate_fn=collate_batches,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle and sampler is None else None)

    def _evaluation_sampler(self, dataset: PatchDataset, split: str) -> DistributedSampler | None:
        """Under DDP: every patch on exactly one process (Lightning's own sampler would pad with repeats).

        Being a ``DistributedSampler``, Lightning keeps it instead of injecting its padded one.
        Process k gets patches k, k + n, k + 2n, ...; counts may differ by one between processes:
        metric states and epoch-level ``sync_dist`` logging reduce once per epoch, and DDP syncs
        buffers only before the first evaluation batch, so every process needs at least one patch.
        """
        processes, rank = self._world()
        if processes == 1:
            return None
        if len(dataset) < processes:
            raise ValueError(f"{self.root}: the {split} split holds {len(dataset)} patch(es), fewer than the "
                             f"{processes} DDP processes; every process needs at least one (use more data or fewer devices)")
        return UnrepeatedDistributedSampler(dataset, num_replicas=processes, rank=rank, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        # Each sample is drawn in the size bucket of its patch (a crop in that of the patch it was
        # cut from); the bucket edges come from the training patches (insarslide.data.sizes).
        pixels = self.store.table["landslide_pixels"].to_numpy()
        sample_pixels = pixels[[s.patch for s in self.train_set.samples]]
        reference = pixels[self.split_labels == "train"]
        sampler = self.sampler.build(sample_pixels, reference, self.seed)
        if self._train_start is not None:
            epoch, batches_done = self._train_start
            sampler.start_at(epoch, min(batches_done * self.batch_size, len(sampler)))
            self._train_start = None
        return self._loader(self.train_set, self.batch_size, shuffle=True, sampler=sampler)

    def resume_training_at(self, epoch: int, batches_done: int) -> None:
        """Let the next training loader start ``batches_done`` batches into ``epoch``
        (called by :class:`insarslide.training.callbacks.TrainingPosition` when a run resumes)."""
        self._train_start = (int(epoch), int(batches_done))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False,
                            sampler=self._evaluation_sampler(self.val_set, "val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False,
                            sampler=self._evaluation_sampler(self.test_set, "test"))
