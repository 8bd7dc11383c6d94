"""Thesis section 5.3.1: splits, oversampling, label smoothing, bucket sampler, augmentation."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_train
from insarslide.data.augment import AlbumentationsAugmenter, Augmenter
from insarslide.data.oversample import SmallLandslideOversampler, apply_crop, crop_origin
from insarslide.data.samplers import BucketSampler, EpochDraws, bucket_weights
from insarslide.data.smoothing import SoftLabelCache, smooth_labels
from insarslide.data.sizes import patch_size_buckets, patch_size_edges
from insarslide.data.splits import RandomSplit, RegionSplit, StratifiedSplit


def table(n_events=10, per_event=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_events):
        for _ in range(per_event):
            rows.append({"event_id": f"ev{e}", "region": f"r{e % 4}",
                         "landslide_pixels": int(rng.choice([0, 0, 0, rng.integers(1, 2000)]))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ splits
def test_random_split_is_70_20_10_and_reproducible():
    t = table()
    labels = RandomSplit(seed=1).assign(t)
    assert (pd.Series(labels).value_counts().to_dict()) == {"train": 140, "val": 40, "test": 20}
    np.testing.assert_array_equal(labels, RandomSplit(seed=1).assign(t))
    assert not np.array_equal(labels, RandomSplit(seed=2).assign(t))


def test_stratified_split_keeps_bucket_shares():
    t = table(n_events=20)
    labels = StratifiedSplit(seed=0).assign(t)
    pixels = t["landslide_pixels"].to_numpy()
    buckets = patch_size_buckets(pixels, patch_size_edges(pixels))
    for b in range(4):
        members = labels[buckets == b]
        share = np.mean(members == "train")
        assert abs(share - 0.7) <= 1.0 / max(len(members), 1) + 1e-9


def test_region_split_never_puts_an_event_in_two_splits():
    t = table()
    for seed in range(5):
        labels = RegionSplit(seed=seed).assign(t)
        per_event = pd.DataFrame({"e": t["event_id"], "s": labels}).groupby("e")["s"].nunique()
        assert per_event.max() == 1
        assert set(labels) == {"train", "val", "test"}
        shares = pd.Series(labels).value_counts(normalize=True)
        assert abs(shares["train"] - 0.7) <= 0.15


def test_region_split_with_named_events_and_errors():
    t = table()
    labels = RegionSplit(val_events=["ev1", "ev2"], test_events=["ev3"]).assign(t)
    assert set(labels[t["event_id"].isin(["ev1", "ev2"])]) == {"val"}
    assert set(labels[t["event_id"] == "ev3"]) == {"test"}
    with pytest.raises(ValueError, match="ev99"):
        RegionSplit(test_events=["ev99"]).assign(t)
    with pytest.raises(ValueError, match="both"):
        RegionSplit(val_events=["ev1"], test_events=["ev1"]).assign(t)
    by_region = RegionSplit(seed=0, group_by="region").assign(t)
    assert pd.DataFrame({"r": t["region"], "s": by_region}).groupby("r")["s"].nunique().max() == 1


# ------------------------------------------------------------- smoothing
def test_smoothing_values_at_known_distances():
    mask = np.zeros((21, 21), np.uint8)
    mask[10, 10] = 1
    soft = smooth_labels(mask, sigma=3.0)
    assert soft[10, 10] == 1.0
    assert soft[10, 13] == pytest.approx(np.exp(-9 / 18), rel=1e-6)       # d = 3
    assert soft[13, 14] == pytest.approx(np.exp(-25 / 18), rel=1e-6)      # d = 5
    assert soft[0, 0] == pytest.approx(np.exp(-200 / 18), rel=1e-5)


def test_smoothing_sigma_zero_is_the_labels():
    mask = (np.random.default_rng(0).random((16, 16)) < 0.1).astype(np.uint8)
    np.testing.assert_array_equal(smooth_labels(mask, 0), mask.astype(np.float32))
    np.testing.assert_array_equal(smooth_labels(np.zeros((4, 4), np.uint8), 5), 0)


def test_smoothing_commutes_with_flips_and_rotations():
    mask = (np.random.default_rng(1).random((20, 20)) < 0.05).astype(np.uint8)
    soft = smooth_labels(mask, 4)
    np.testing.assert_allclose(smooth_labels(np.rot90(mask), 4), np.rot90(soft), atol=1e-6)
    np.testing.assert_allclose(smooth_labels(mask[:, ::-1], 4), soft[:, ::-1], atol=1e-6)


def test_soft_label_cache_matches_direct_computation(patch_root, tmp_path):
    from insarslide.data.patchstore import PatchStore

    store = PatchStore(patch_root)
    cache = SoftLabelCache(store, 3.0, tmp_path)
    path = cache.build()
    assert path.is_file() and cache.build() == path  # built once
    i = int(np.argmax(store.table["landslide_pixels"].to_numpy()))
    landslide, _ = store.read_labels(i)
    np.testing.assert_allclose(cache.get(i), smooth_labels(landslide, 3.0), atol=1e-3)


# ----------------------------------------------------------- oversampling
def test_crop_is_centred_on_the_bounding_box_and_padding_is_invalid():
    p, crop = 64, 16
    landslide = np.zeros((p, p), np.uint8)
    landslide[20:25, 30:41] = 1  # bbox rows 20..24, cols 30..40: centre (22.5, 35.5)
    r0, c0 = crop_origin(landslide, crop)
    assert (r0, c0) == (14, 27)  # floor(22.5 - 8), floor(35.5 - 8)
    bands = np.arange(p * p, dtype=np.float32).reshape(1, p, p)
    valid = np.ones((p, p), np.uint8)
    (new_bands, new_labels), new_valid = apply_crop([bands, landslide], valid, (r0, c0), crop)
    off = (p - crop) // 2
    assert new_valid.sum() == crop * crop and new_valid[off:off + crop, off:off + crop].all()
    np.testing.assert_array_equal(new_bands[0, off:off + crop, off:off + crop], bands[0, r0:r0 + crop, c0:c0 + crop])
    assert new_labels.sum() == landslide.sum()  # the landslide is inside the crop
    assert (new_bands[0][new_valid == 0] == 0).all()  # zero-padded
    rows, cols = np.nonzero(new_labels)
    centre = ((rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2)
    assert abs(centre[0] - p / 2) <= 0.5 and abs(centre[1] - p / 2) <= 0.5


def test_crop_past_the_patch_edge_is_invalid_there():
    p, crop = 64, 32
    landslide = np.zeros((p, p), np.uint8)
    landslide[0:2, 0:2] = 1
    origin = crop_origin(landslide, crop)
    assert origin == (-15, -15)
    (_,), new_valid = apply_crop([landslide], np.ones((p, p), np.uint8), origin, crop)
    assert new_valid.sum() == (crop - 15) ** 2


def test_size_classes_one_rule_worked_by_hand():
    # Landslide patches 10, 20, 30, 40, 50 px: p25 = 20 and p75 = 40 (linear quantiles of five values).
    pixels = np.array([0, 10, 20, 30, 40, 50, 0])
    assert patch_size_edges(pixels) == (20.0, 40.0)
    # A patch at the edge belongs to the class below it: 20 is small, 40 is medium.
    np.testing.assert_array_equal(patch_size_buckets(pixels, (20.0, 40.0)), [0, 1, 1, 2, 2, 3, 0])
    # Edges from another reference set (the training patches) apply to any counts.
    np.testing.assert_array_equal(patch_size_buckets(np.array([5, 25, 45]), (20.0, 40.0)), [1, 2, 3])
    assert patch_size_edges(np.zeros(4)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="quantiles"):
        patch_size_edges(pixels, (0.8, 0.2))


def test_oversampling_touches_only_small_training_patches():
    # Training landslide patches hold 5, 10, 50, 100, 200, 300 px: p25 sits at rank 1.25 of the six,
    # 10 + 0.25 * (50 - 10) = 20 px, so the small ones are patches 1 (5 px) and 2 (10 px);
    # patches 7 (7 px) and 8 (3 px) are small too but not training patches.
    pixels = np.array([0, 5, 10, 50, 100, 200, 300, 7, 3, 1000])
    labels = {}
    for i in range(10):
        flat = np.zeros(64 * 64, np.uint8)
        flat[: pixels[i]] = 1
        labels[i] = flat.reshape(64, 64)
    train = np.array([0, 1, 2, 3, 4, 5, 6])
    sampler = SmallLandslideOversampler(quantile=0.25, crop_size=32)
    samples = sampler.samples(train, pixels, lambda i: (labels[i], None))
    assert sampler.threshold_px == pytest.approx(20.0)
    extra = [s for s in samples if s.crop is not None]
    assert sorted(s.patch for s in extra) == [1, 2]
    assert [s.patch for s in samples[: len(train)]] == list(train)
    assert len(samples) == len(train) + 2
    assert SmallLandslideOversampler(enabled=False).samples(train, pixels, None) == [s for s in samples if s.crop is None]


def test_oversampling_includes_a_patch_exactly_at_the_quantile():
    # 10, 20, 30, 40, 50 px: p25 = 20 exactly; the 20 px patch is small (the same rule as the sampler's buckets).
    pixels = np.array([10, 20, 30, 40, 50])
    labels = {i: (np.arange(64 * 64).reshape(64, 64) < pixels[i]).astype(np.uint8) for i in range(5)}
    samples = SmallLandslideOversampler(quantile=0.25, crop_size=32).samples(np.arange(5), pixels, lambda i: (labels[i], None))
    assert sorted(s.patch for s in samples if s.crop is not None) == [0, 1]


def test_datamodule_oversamples_training_split_only(tmp_path, patch_root):
    import hydra

    cfg = compose_train(["oversample=thesis", "sampler=uniform"], tmp_path, patch_root)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    assert dm.counts["train_samples"] > dm.counts["train_patches"]
    assert all(s.crop is None for s in dm.val_set.samples + dm.test_set.samples)
    cropped = next(k for k, s in enumerate(dm.train_set.samples) if s.crop is not None)
    item = dm.train_set[cropped]
    assert item["valid"].sum() <= 32 * 32


# -------------------------------------------------------------- sampler
def test_bucket_sampler_shares_within_three_standard_errors():
    rng = np.random.default_rng(0)
    pixels = np.concatenate([np.zeros(300, int), rng.integers(1, 5000, 200)])
    weights = [0.1, 0.5, 0.3, 0.1]
    sampler = BucketSampler(weights=weights, epoch_length=10_000).build(pixels, pixels, seed=0)
    draws = np.array([index for index, _seed in sampler], dtype=np.int64)
    assert draws.size == 10_000
    _, buckets = bucket_weights(pixels, weights)
    shares = np.bincount(buckets[draws], minlength=4) / draws.size
    se = np.sqrt(np.array(weights) * (1 - np.array(weights)) / draws.size)
    assert (np.abs(shares - weights) <= 3 * se).all(), shares


def test_bucket_weights_worked_by_hand_with_crops_in_their_patch_class():
    # Training patches 0, 0, 10, 20, 30, 40, 50 px: edges (20, 40). Two extra samples are crops of the
    # 10 px and 20 px patches (small): they count as small, and the edges stay those of the patches.
    patches = np.array([0, 0, 10, 20, 30, 40, 50])
    samples = np.concatenate([patches, [10, 20]])
    per_sample, classes = bucket_weights(samples, [0.1, 0.5, 0.3, 0.1], reference_pixels=patches)
    np.testing.assert_array_equal(classes, [0, 0, 1, 1, 2, 2, 3, 1, 1])
    # Expected draw probability: the class share spread evenly over the class's samples.
    np.testing.assert_allclose(per_sample, [0.05, 0.05, 0.125, 0.125, 0.15, 0.15, 0.1, 0.125, 0.125])


def test_bucket_sampler_redistributes_empty_bucket_with_warning():
    pixels = np.array([5, 6, 7, 8, 100, 200, 300, 400])  # no patch without landslides
    with pytest.warns(UserWarning, match="none"):
        per_sample, buckets = bucket_weights(pixels, [0.1, 0.5, 0.3, 0.1])
    share = np.bincount(buckets, weights=per_sample, minlength=4)
    np.testing.assert_allclose(share, [0, 0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9])


def test_bucket_sampler_in_the_datamodule(tmp_path, patch_root):
    import hydra

    cfg = compose_train(["sampler=bucket", "sampler.epoch_length=17"], tmp_path, patch_root)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochDraws) and len(loader.sampler) == 17


# ---------------------------------------------------------- augmentation
@pytest.mark.parametrize("kind", [Augmenter, AlbumentationsAugmenter])
def test_augmentation_keeps_bands_labels_and_mask_aligned(kind):
    p = 16
    base = np.arange(p * p, dtype=np.float32).reshape(p, p)  # asymmetric: every pixel distinct
    bands = np.stack([base, base * 2 + 1, -base])
    landslide = (base % 7 == 0).astype(np.uint8)
    valid = (base % 5 != 0).astype(np.uint8)
    soft = base / base.max()
    aug = kind(hflip=0.5, vflip=0.5, rotate90=1.0, seed=0)
    changed = 0
    seen = set()
    as_t = torch.from_numpy
    for _ in range(20):
        out, masks = aug(as_t(bands), [as_t(landslide), as_t(soft), as_t(valid)])
        out, (l2, s2, v2) = out.numpy(), [m.numpy() for m in masks]
        key = out[0]
        changed += int(not np.array_equal(key, base))
        seen.add(key.tobytes())
        np.testing.assert_array_equal(out[1], key * 2 + 1)
        np.testing.assert_array_equal(out[2], -key)
        np.testing.assert_array_equal(l2, (key % 7 == 0).astype(np.uint8))
        np.testing.assert_array_equal(v2, (key % 5 != 0).astype(np.uint8))
        np.testing.assert_allclose(s2, key / base.max())
    assert changed > 10
    assert len(seen) >= 4  # several of the 8 flip/rotation combinations occur


def test_d4_composition_matches_numpy_flips_and_rotations():
    from insarslide.data.augment import d4_element

    m = np.arange(12.0).reshape(3, 4)
    for h in (False, True):
        for v in (False, True):
            for k in range(4):
                ref = m[:, ::-1] if h else m
                ref = ref[::-1] if v else ref
                ref = np.rot90(ref, k)
                dims, transpose = d4_element(h, v, k)
                got = torch.flip(torch.from_numpy(m), dims) if dims else torch.from_numpy(m)
                got = got.transpose(-2, -1) if transpose else got
                np.testing.assert_array_equal(got.numpy(), ref)


def test_writing_through_the_destination_view_leaves_the_flipped_rotated_patch():
    from insarslide.data.augment import D4, d4_element

    m = np.arange(18.0).reshape(2, 3, 3)  # two bands of a square patch, every value distinct
    for h in (False, True):
        for v in (False, True):
            for k in range(4):
                ref = m[..., ::-1] if h else m
                ref = ref[..., ::-1, :] if v else ref
                ref = np.rot90(ref, k, axes=(-2, -1))
                out = np.full_like(m, -1.0)
                dims, transpose = d4_element(h, v, k)
                D4(tuple(dims), transpose).destination(out)[...] = m
                np.testing.assert_array_equal(out, ref)


class FixedDraw(Augmenter):
    """Always the same flip/rotation (the test needs to know which one the batch holds)."""

    def __init__(self, d4):
        super().__init__(seed=0)
        self.fixed = d4

    def draw(self):
        return self.fixed


def test_batch_holds_the_cropped_flipped_rotated_patch_for_every_draw(tmp_path):
    """Each batch slot is written in one pass through a view; compare with the patch cropped, padded,
    flipped and transposed by hand (64 px: a transposed write goes in two blocks of 32 rows)."""
    from data.scenes import UTM33
    from insarslide.data.augment import D4
    from insarslide.data.datamodule import PatchDataset
    from insarslide.data.oversample import Sample
    from insarslide.data.patch_writer import ShardWriter, write_dataset_index
    from insarslide.data.patchstore import PatchStore
    from insarslide.contract.spec import BANDS

    p, crop = 64, 32
    bands = np.arange(len(BANDS) * p * p, dtype=np.float32).reshape(len(BANDS), p, p)
    landslide = (np.arange(p * p).reshape(p, p) % 3 == 0).astype(np.uint8)
    valid = (np.arange(p * p).reshape(p, p) % 5 != 0).astype(np.uint8)
    with ShardWriter(tmp_path, "ev", p, {"crs_wkt": UTM33}) as writer:
        writer.add(bands, landslide, valid, {"region": "r", "row": 0, "col": 0, "landslide_pixels": int(landslide.sum()),
                                             "valid_fraction": float(valid.mean()), "x_origin": 500_000.0,
                                             "x_step": 30.0, "y_origin": 5_000_000.0, "y_step": -30.0})
        writer.commit()
    write_dataset_index(tmp_path, p)
    store = PatchStore(tmp_path)
    band_idx = [3, 0, 5]
    # Crop origin (-5, 40), 32 px, centred at offset 16: source rows 0..26 and columns 40..63 of the patch
    # land at rows 21..47 and columns 16..39 of the sample; the rest is zero padding with valid = 0.
    padded = [np.zeros((3, p, p), np.float32), np.zeros((p, p), np.uint8), np.zeros((p, p), np.uint8)]
    padded[0][:, 21:48, 16:40] = bands[band_idx, 0:27, 40:64]
    padded[1][21:48, 16:40] = landslide[0:27, 40:64]
    padded[2][21:48, 16:40] = valid[0:27, 40:64]
    for dims in [(), (-1,), (-2,), (-1, -2)]:
        for transpose in (False, True):
            dataset = PatchDataset(store, [Sample(0), Sample(0, (-5, 40))], band_idx,
                                   augment=FixedDraw(D4(dims, transpose)), crop_size=crop)
            batch = dataset.__getitems__([(0, 1), (1, 2)])

            def moved(a):
                a = np.flip(a, dims) if dims else a
                return a.swapaxes(-2, -1) if transpose else a

            for slot, (b, lab, val) in enumerate([(bands[band_idx], landslide, valid), padded]):
                np.testing.assert_array_equal(batch["bands"][slot].numpy(), moved(b))
                np.testing.assert_array_equal(batch["landslide"][slot].numpy(), moved(lab))
                np.testing.assert_array_equal(batch["target"][slot].numpy(), moved(lab).astype(np.float32))
                np.testing.assert_array_equal(batch["valid"][slot].numpy(), moved(val))
            assert batch["index"].tolist() == [0, 0]


@pytest.mark.parametrize("kind", [Augmenter, AlbumentationsAugmenter])
def test_phase_offset_wraps_and_only_touches_phase(kind):
    bands = np.stack([np.full((8, 8), 3.0, np.float32), np.ones((8, 8), np.float32)])
    aug = kind(hflip=0, vflip=0, rotate90=0, phase_offset=1.0, seed=3).with_bands(["phase", "coherence"])
    out, _ = aug(torch.from_numpy(bands), [torch.zeros(8, 8, dtype=torch.uint8)])
    out = out.numpy()
    assert (np.abs(out[0]) <= np.pi).all() and not np.allclose(out[0], 3.0)
    assert np.ptp(out[0]) < 1e-5  # a constant offset
    np.testing.assert_array_equal(out[1], 1.0)


BANDS3 = ["coherence", "displacement", "intensity"]


def _shift_input():
    coh = np.full((64, 64), 0.95, np.float32)
    coh[0, 0] = np.nan  # no data stays no data
    disp = np.linspace(-0.01, 0.01, 64 * 64, dtype=np.float32).reshape(64, 64)
    return np.stack([coh, disp, np.full((64, 64), 0.2, np.float32)])


@pytest.mark.parametrize("kind", [Augmenter, AlbumentationsAugmenter])
def test_band_offset_is_one_constant_per_sample_and_touches_only_its_band(kind):
    x = _shift_input()
    offsets = []
    for seed in range(40):
        aug = kind(hflip=0, vflip=0, rotate90=0, seed=seed, band_offset={"displacement": 0.05}).with_bands(BANDS3)
        out = aug(torch.from_numpy(x.copy()), [torch.zeros(64, 64, dtype=torch.uint8)])[0].numpy()
        delta = out[1] - x[1]
        assert np.ptp(delta) < 1e-6  # one constant over the patch: the pattern is kept
        offsets.append(float(delta[0, 0]))
        np.testing.assert_array_equal(out[[0, 2]], x[[0, 2]])  # other bands untouched, NaN kept
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.05 + 1e-6  # within the half-width
    assert offsets.min() < -0.025 and offsets.max() > 0.025  # both signs, spread over the range (40 draws)


def test_coherence_bias_is_clipped_to_the_unit_interval_and_keeps_no_data():
    x = _shift_input()
    seen_clip = seen_down = False
    for seed in range(20):
        aug = Augmenter(hflip=0, vflip=0, rotate90=0, seed=seed, coherence_bias=0.2).with_bands(BANDS3)
        out = aug(torch.from_numpy(x.copy()), [torch.zeros(64, 64, dtype=torch.uint8)])[0].numpy()
        assert np.isnan(out[0, 0, 0])
        c = out[0][~np.isnan(out[0])]
        assert np.ptp(c) < 1e-6 and 0.75 - 1e-6 <= c[0] <= 1.0  # 0.95 + bias in [-0.2, 0.2], clipped at 1
        seen_clip |= c[0] == 1.0
        seen_down |= c[0] < 0.9
        np.testing.assert_array_equal(out[1:], x[1:])
    assert seen_clip and seen_down


def test_band_noise_has_the_configured_spread():
    x = _shift_input()
    aug = Augmenter(hflip=0, vflip=0, rotate90=0, seed=5, band_noise={"intensity": 0.1}).with_bands(BANDS3)
    out = aug(torch.from_numpy(x.copy()), [torch.zeros(64, 64, dtype=torch.uint8)])[0].numpy()
    noise = out[2] - x[2]
    assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.005  # 4096 draws: std error ~0.0016
    np.testing.assert_array_equal(out[:2], x[:2])


def test_band_shifts_refuse_unknown_bands_and_bad_widths():
    with pytest.raises(ValueError, match=r"band_offset / band_noise name bands \['slope'\]"):
        Augmenter(band_offset={"slope": 1.0}).with_bands(BANDS3)
    with pytest.raises(ValueError, match="band_noise: values must be finite and >= 0"):
        Augmenter(band_noise={"intensity": -1.0})
    with pytest.raises(ValueError, match="coherence_bias"):
        Augmenter(coherence_bias=1.5)
    with pytest.raises(ValueError, match="phase_offset"):
        Augmenter(band_offset={"phase": 1.0}).with_bands(["phase"])
    Augmenter(band_offset={"slope": 0.0}, band_noise={"phase": 0.0}).with_bands(BANDS3)  # zeros: off, fine


def test_band_shifts_off_by_default_leave_the_random_stream_unchanged():
    aug, plain = Augmenter(seed=9).with_bands(BANDS3), Augmenter(seed=9)
    assert not aug.radiometric
    assert [aug.draw() for _ in range(20)] == [plain.draw() for _ in range(20)]


def test_loader_with_worker_processes(tmp_path, patch_root):
    import hydra

    cfg = compose_train(["data.num_workers=2", "smoothing.sigma=3", "sampler=bucket", "augment=thesis",
                         "data.drop_last=false"], tmp_path, patch_root)  # every sample, the last batch too
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    seen = 0
    for batch in dm.train_dataloader():
        bands, valid, target = batch["bands"], batch["valid"].bool(), batch["target"]
        assert bands.shape[1:] == (7, 64, 64) and bands.dtype == torch.float32
        assert torch.isfinite(bands.permute(1, 0, 2, 3)[:, valid]).all()  # valid pixels have finite bands
        assert (target >= batch["landslide"].float() - 1e-6).all()  # soft labels keep 1 on landslides
        seen += bands.shape[0]
    assert seen == len(dm.train_set)
    val = next(iter(dm.val_dataloader()))
    bands, _, _ = dm.store.read(int(val["index"][0]))
    np.testing.assert_array_equal(val["bands"][0].numpy(), bands)  # no augmentation outside training
