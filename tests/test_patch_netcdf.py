"""The NetCDF patch format: what a user sees with xarray, round trip, conversion, bad files, caches, workers."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from pyproj import CRS

from conftest import compose_train
from data.scenes import ORIGIN, PIXEL_M, make_scene
from data_prep.patches import build_patches, convert_dataset
from insarslide.data.patchstore import PatchFormatError, PatchStore
from insarslide.data.smoothing import SoftLabelCache

P = 32
BAND_UNITS = ["rad", "1", "1", "m", "m", "rad", "degree"]  # docs/data_format.md's units, in band order
SCENE_ATTRS = {"orbit_direction": "DESCENDING", "wavelength_m": 0.05546576, "relative_orbit": 22}


def build_one(tmp_path, h=70, w=90, *, landslide=None, valid=None, compression="none", out="out", seed=0):
    rng = np.random.default_rng(seed)
    if landslide is None:
        landslide = (rng.random((h, w)) < 0.05).astype(np.uint8)
    if valid is None:
        valid = (rng.random((h, w)) < 0.9).astype(np.uint8)
    scene = make_scene(tmp_path / "ev.nc", h, w, landslide=landslide, valid=valid, attrs=SCENE_ATTRS)
    report = build_patches([scene], tmp_path / out, patch_size=P, progress=False, compression=compression,
                           resume=False)
    assert not report.failures, report.failures
    return scene, tmp_path / out


def test_shard_opens_with_xarray_as_documented(tmp_path):
    _, root = build_one(tmp_path)
    assert json.loads((root / "dataset.json").read_text())["shards"] == ["test_event.nc"]
    with xr.open_dataset(root / "test_event.nc", engine="h5netcdf") as ds:
        n = ds.sizes["patch"]
        assert n == 9  # 70 x 90 in 32 px tiles: 3 rows x 3 columns, none empty
        assert dict(ds.sizes) == {"patch": 9, "band": 7, "y": P, "x": P}
        assert ds["bands"].dims == ("patch", "band", "y", "x") and ds["bands"].dtype == np.float32
        for name in ("landslide", "valid"):
            assert ds[name].dims == ("patch", "y", "x") and ds[name].dtype == np.uint8
            assert list(ds[name].attrs["flag_values"]) == [0, 1]
        assert list(ds["band"].values) == ["phase", "coherence", "intensity", "elevation", "displacement",
                                           "unwrapped_phase", "local_incidence_angle"]
        assert list(ds["band_units"].values) == BAND_UNITS
        assert CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"]).to_epsg() == 32633
        assert ds["bands"].attrs["grid_mapping"] == "spatial_ref"
        assert ds["x_origin"].attrs["units"] == "m"
        # patch k of a 3 x 3 tiling sits at row 32 * (k // 3), col 32 * (k % 3) of a 30 m grid
        k = np.arange(9)
        np.testing.assert_array_equal(ds["row"].values, 32 * (k // 3))
        np.testing.assert_array_equal(ds["col"].values, 32 * (k % 3))
        np.testing.assert_allclose(ds["x_origin"].values, 500_000.0 + 960.0 * (k % 3))
        np.testing.assert_allclose(ds["y_origin"].values, 5_000_000.0 - 960.0 * (k // 3))
        np.testing.assert_allclose(ds["x_step"].values, 30.0)
        np.testing.assert_allclose(ds["y_step"].values, -30.0)
        np.testing.assert_allclose(ds["x_centre"].values[4, :2], [500_000.0 + 960 + 15, 500_000.0 + 960 + 45])
        assert ds.attrs["event_id"] == "test_event" and ds.attrs["region"] == "Test region"
        assert ds.attrs["pre_date"] == "2022-01-01" and ds.attrs["orbit_direction"] == "DESCENDING"
        assert ds.attrs["wavelength_m"] == pytest.approx(0.05546576) and ds.attrs["relative_orbit"] == 22
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["insarslide_format_version"] == 2
        np.testing.assert_array_equal(ds.attrs["scene_shape"], [70, 90])


def test_patches_put_back_by_their_geotransform_reproduce_the_scene(tmp_path):
    h, w = 70, 90
    scene, root = build_one(tmp_path, h, w)
    bands_back = np.full((7, h, w), np.nan, np.float32)
    labels_back = np.zeros((h, w), np.uint8)
    valid_back = np.zeros((h, w), np.uint8)
    with xr.open_dataset(root / "test_event.nc", engine="h5netcdf") as ds:
        for k in range(ds.sizes["patch"]):
            patch = ds.isel(patch=k)
            r = int(round((ORIGIN[1] - float(patch["y_origin"])) / PIXEL_M))  # placed by map position only
            c = int(round((float(patch["x_origin"]) - ORIGIN[0]) / PIXEL_M))
            hh, ww = min(P, h - r), min(P, w - c)
            bands_back[:, r:r + hh, c:c + ww] = patch["bands"].values[:, :hh, :ww]
            labels_back[r:r + hh, c:c + ww] = patch["landslide"].values[:hh, :ww]
            valid_back[r:r + hh, c:c + ww] = patch["valid"].values[:hh, :ww]
            assert not patch["valid"].values[hh:, :].any() and not patch["valid"].values[:, ww:].any()
    from insarslide.contract.scene import open_scene

    with open_scene(scene) as opened:
        bands, lab, val = opened.read_window(0, h, 0, w)
    np.testing.assert_array_equal(bands_back, bands)
    np.testing.assert_array_equal(labels_back, lab)
    np.testing.assert_array_equal(valid_back, val)


def test_arrays_are_contiguous_by_default_and_zlib_reads_the_same(tmp_path):
    _, plain = build_one(tmp_path, out="plain")
    _, packed = build_one(tmp_path, compression="zlib", out="packed")
    with h5py.File(plain / "test_event.nc") as f:
        assert f["bands"].chunks is None and f["bands"].compression is None
        assert f["bands"].id.get_offset() % 4096 == 0  # page-aligned: mapped like a raw file
    with h5py.File(packed / "test_event.nc") as f:
        assert f["bands"].compression == "gzip" and f["landslide"].compression == "gzip"
    a, b = PatchStore(plain), PatchStore(packed)
    assert b.shards[0].offsets is None and a.shards[0].offsets is not None
    assert (packed / "test_event.nc").stat().st_size < (plain / "test_event.nc").stat().st_size
    for i in range(len(a)):
        for x, y in zip(a.read(i), b.read(i), strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.read(3, [1, 4])[0], b.read(3, [1, 4])[0])


def test_truncated_and_foreign_files_are_refused_by_name(tmp_path):
    scene, root = build_one(tmp_path)
    shard = root / "test_event.nc"
    intact = shard.read_bytes()
    shard.write_bytes(intact[: len(intact) * 2 // 3])
    with pytest.raises(PatchFormatError, match="test_event.nc"):
        PatchStore(root)
    shutil.copy(scene, shard)  # a NetCDF file, but a scene, not a patch shard
    with pytest.raises(PatchFormatError, match=r"test_event\.nc: not an insarslide patch shard"):
        PatchStore(root)
    shard.unlink()
    with pytest.raises(PatchFormatError, match=r"test_event\.nc: shard listed in dataset.json is missing"):
        PatchStore(root)


# --------------------------------------------------------------- conversion
def write_old_format(store: PatchStore, root, extra=None):
    """The version-1 layout (raw arrays, CSV and JSON) as the old writer left it, from a store's content."""
    root.mkdir(parents=True)
    events = []
    for k, shard in enumerate(store.shards):
        event = shard.info["event_id"]
        events.append(event)
        folder = root / event
        folder.mkdir()
        rows = store.table[store.table["shard"] == k]
        with open(folder / "bands.f32", "wb") as b, open(folder / "landslide.u8", "wb") as s, \
                open(folder / "valid.u8", "wb") as v:
            for i in rows.index:
                bands, landslide, valid = store.read(int(i))
                b.write(bands.astype("<f4").tobytes())
                s.write(landslide.tobytes())
                v.write(valid.tobytes())
        rows.drop(columns="shard").to_csv(folder / "patches.csv", index=False)
        info = {key: shard.info[key] for key in ("region", "scene_path", "scene_shape", "transform", "crs_wkt",
                                                 "stride", "skipped_empty", "attrs")}
        (folder / "shard.json").write_text(json.dumps({**info, "event_id": event, "count": len(rows),
                                                       "patch_size": store.patch_size}))
    index = {"format": "insarslide-patches", "version": 1, "patch_size": store.patch_size,
             "bands": list(store.index["bands"]), "events": events, **(extra or {})}
    (root / "dataset.json").write_text(json.dumps(index))
    return root


def test_old_format_is_refused_with_the_convert_command_and_converts_exactly(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "dataset.json").write_text(json.dumps({"format": "insarslide-patches", "version": 1, "patch_size": 4,
                                                  "bands": ["phase"], "events": []}))
    with pytest.raises(PatchFormatError, match="python -m data_prep.patches convert"):
        PatchStore(old)
    shutil.rmtree(old)
    _, root = build_one(tmp_path)
    source = PatchStore(root)
    write_old_format(source, old, extra={"synthetic": {"seed": 7}})
    written = convert_dataset(old, tmp_path / "new", progress=False)
    assert written == ["test_event"]
    new = PatchStore(tmp_path / "new")
    assert new.index["synthetic"] == {"seed": 7}
    assert new.table.drop(columns="shard").equals(source.table.drop(columns="shard"))
    for i in range(len(source)):
        for x, y in zip(source.read(i), new.read(i), strict=True):
            np.testing.assert_array_equal(x, y)
    (info,), (source_info,) = [s.info for s in new.shards], [s.info for s in source.shards]
    assert info["event_id"] == source_info["event_id"] == "test_event"
    assert info["attrs"]["orbit_direction"] == "DESCENDING"
    assert info["transform"] == source_info["transform"]
    assert convert_dataset(old, tmp_path / "new", progress=False) == []  # resumable: the shard is kept


@pytest.mark.e2e
def test_convert_command_line(tmp_path):
    _, root = build_one(tmp_path)
    old = write_old_format(PatchStore(root), tmp_path / "old")
    (old / "test_event" / "valid.u8").write_bytes(b"\0" * 10)
    cmd = [sys.executable, "-m", "data_prep.patches", "convert", str(old), str(tmp_path / "new"), "progress=false"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1 and "valid.u8: 10 bytes, expected" in done.stderr
    bad = subprocess.run(cmd + ["compression=lzma", "compression_level=12"], capture_output=True, text=True)
    assert bad.returncode == 2 and "compression 'lzma'" in bad.stderr and "compression_level '12'" in bad.stderr


def batches(root, tmp_path, n=3):
    from hydra.utils import instantiate

    cfg = compose_train(["sampler=bucket", "oversample=thesis", "augment=thesis", "++augment.seed=5",
                         "smoothing.sigma=3", "seed=5"], tmp_path, data_root=root)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    out = []
    for k, batch in enumerate(dm.train_dataloader()):
        if k == n:
            break
        out.append(batch)
    return out


def test_training_on_converted_old_data_gives_the_same_batches(patch_root, tmp_path):
    old = write_old_format(PatchStore(patch_root), tmp_path / "old")
    convert_dataset(old, tmp_path / "new", progress=False)
    reference, converted = batches(patch_root, tmp_path / "a"), batches(tmp_path / "new", tmp_path / "b")
    assert len(reference) == 3
    for one, two in zip(reference, converted, strict=True):
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(one[key], two[key], equal_nan=True, rtol=0, atol=0)


# ---------------------------------------------------- soft labels, workers
def test_rebuilt_patches_with_corrected_labels_get_fresh_soft_labels(tmp_path):
    wrong = np.zeros((32, 32), np.uint8)
    wrong[20, 20] = 1
    build_one(tmp_path, 32, 32, landslide=wrong, valid=np.ones((32, 32), np.uint8))
    stale = SoftLabelCache(PatchStore(tmp_path / "out"), 3.0).get(0)
    assert stale[20, 20] == 1.0
    corrected = np.zeros((32, 32), np.uint8)
    corrected[5, 5] = 1  # same event, same count of patches and pixels: only the content differs
    build_one(tmp_path, 32, 32, landslide=corrected, valid=np.ones((32, 32), np.uint8))
    soft = SoftLabelCache(PatchStore(tmp_path / "out"), 3.0).get(0)
    assert soft[5, 5] == 1.0
    assert soft[5, 8] == pytest.approx(np.exp(-9 / 18), abs=1e-3)  # 3 px away, sigma 3: exp(-d^2 / (2 sigma^2))
    assert soft[20, 20] < 1e-3
    assert len(list((tmp_path / "out" / ".cache").glob("*.npy"))) == 1  # the stale cache is gone


def test_workers_open_their_own_handles_on_compressed_shards(tmp_path):
    from insarslide.data.datamodule import PatchDataset, collate_batches
    from insarslide.data.oversample import Sample

    _, root = build_one(tmp_path, compression="zlib")
    store = PatchStore(root)
    store.read(0)  # the parent holds an h5py handle now
    assert store._hdf5
    dataset = PatchDataset(store, [Sample(i) for i in range(len(store))], list(range(7)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_batches,
                                         multiprocessing_context="fork")
    seen = list(loader)
    assert not store._hdf5  # closed before the fork, reopened only on the next read
    assert sum(len(batch["index"]) for batch in seen) == len(store) == 9
    for batch in seen:
        for slot, i in enumerate(batch["index"].tolist()):
            bands, landslide, valid = store.read(i)
            np.testing.assert_array_equal(batch["bands"][slot].numpy(), bands)
            np.testing.assert_array_equal(batch["landslide"][slot].numpy(), landslide)
            np.testing.assert_array_equal(batch["valid"][slot].numpy(), valid)


def test_content_digest_names_the_pixels_not_the_files(tmp_path):
    import hashlib

    from data.odd_patches import write_odd_patch_set

    root = write_odd_patch_set(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(root, copy)  # another folder, other file stamps, the same pixels
    store = PatchStore(root)
    rows = [int(r) for r in np.flatnonzero(store.table["event_id"].to_numpy() == "test_c")]
    digest = store.content_digest(rows)
    assert PatchStore(copy).content_digest(rows) == digest
    # By hand: SHA-1 of each patch's float32 bands, uint8 labels and uint8 valid mask, patch after patch.
    by_hand = hashlib.sha1()
    for row in rows:
        bands, landslide, valid = store.read(row)
        by_hand.update(bands.astype(np.float32).tobytes() + landslide.astype(np.uint8).tobytes() +
                       valid.astype(np.uint8).tobytes())
    assert digest == by_hand.hexdigest()
    assert store.content_digest(rows[::-1]) != digest  # order is part of it
    # One band value changed in the copy's shard (labels untouched): other pixels, another digest.
    with h5py.File(copy / "test_c.nc", "r+") as handle:
        handle["bands"][rows.index(rows[0]), 0, 0, 0] += 1.0
    assert PatchStore(copy).content_digest(rows) != digest
