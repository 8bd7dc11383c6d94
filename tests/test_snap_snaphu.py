"""SNAPHU for real on a folder laid out as SNAP's SnaphuExport writes it."""

import numpy as np
import pytest

from data.snap_products import TAG, snaphu_export_folder
from data_prep.snap.snaphu_folder import (SnaphuFolderError, feasible_tiles, read_conf, read_envi,
                                          unwrap_export_folder)


def ramp(h, w):
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return 0.31 * rows + 0.17 * cols  # about 9 fringes over 80 x 90 pixels


def test_snaphu_unwraps_the_export_folder_into_the_file_snaphu_import_reads(tmp_path):
    h, w = 80, 90
    truth = ramp(h, w)
    phase = np.angle(np.exp(1j * truth)).astype(np.float32)
    coherence = np.full((h, w), 0.9, np.float32)
    phase[:, :3] = 0.0  # SNAP's no-data: phase and coherence both 0
    coherence[:, :3] = 0.0
    product = tmp_path / "export" / "ifg_ml_flt"
    snaphu_export_folder(product, phase, coherence, cost="DEFO", init="MCF", tiles=(2, 2), overlap=(10, 10))
    written = unwrap_export_folder(tmp_path / "export")
    assert written == product / f"UnwPhase_ifg{TAG}.snaphu.img"
    raw = np.fromfile(written, dtype=">f4").reshape(h, w)  # big-endian, as the pre-written header says
    np.testing.assert_array_equal(read_envi(written), raw)
    assert np.isnan(raw[:, :3]).all()
    offset = raw[:, 3:] - truth[:, 3:]
    cycles = offset / (2 * np.pi)
    # unwrapped up to one constant multiple of 2 pi: every fringe resolved
    assert np.abs(cycles - np.round(cycles)).max() < 1e-3 and np.ptp(np.round(cycles)) == 0
    assert not list(product.glob(".*.tmp"))


def test_conf_is_honoured(tmp_path, monkeypatch):
    phase = np.full((300, 200), 0.5, np.float32)
    folder = snaphu_export_folder(tmp_path / "p", phase, phase + 0.3, cost="TOPO", init="MCF", tiles=(3, 2),
                                  overlap=(20, 30), nproc=2)
    job = read_conf(folder)
    assert (job.cost, job.init, job.ntiles, job.overlap, job.nproc, job.nlooks, job.width) == (
        "topo", "mcf", (3, 2), (20, 30), 2, 23.8, 200)
    assert job.phase_file.name == f"Phase_ifg{TAG}.snaphu.img" and job.corr_file.name == f"coh{TAG}.snaphu.img"
    seen = {}

    def recording_unwrap(igram, corr, nlooks, **kwargs):
        seen.update(nlooks=nlooks, corr=float(corr.mean()), phase=float(np.angle(igram).mean()), **kwargs)
        return np.zeros(igram.shape, np.float32), np.zeros(igram.shape, np.uint32)

    monkeypatch.setattr("data_prep.snap.snaphu_folder.dinsar.unwrap", recording_unwrap)
    unwrap_export_folder(folder)
    assert seen["nlooks"] == 23.8 and (seen["cost"], seen["init"]) == ("topo", "mcf")
    assert seen["ntiles"] == (3, 2) and seen["tile_overlap"] == (20, 30) and seen["nproc"] == 2
    assert seen["corr"] == pytest.approx(0.8) and seen["phase"] == pytest.approx(0.5)


def test_tiles_shrink_only_when_smaller_than_twice_the_overlap():
    assert feasible_tiles((1000, 1000), (10, 10), (200, 200)) == ((2, 2), (200, 200))  # 500 > 400, 333 <= 400
    assert feasible_tiles((4000, 300), (10, 10), (200, 200)) == ((9, 1), (200, 0))  # 400 is not > 400; 444 is
    assert feasible_tiles((5000, 5000), (10, 10), (200, 200)) == ((10, 10), (200, 200))


def test_incomplete_folder_is_refused_by_name(tmp_path):
    folder = snaphu_export_folder(tmp_path / "p", np.zeros((4, 6), np.float32), np.ones((4, 6), np.float32))
    (folder / f"coh{TAG}.snaphu.img").write_bytes(b"\0" * 8)
    with pytest.raises(SnaphuFolderError, match=f"coh{TAG}.snaphu.img"):
        unwrap_export_folder(folder)
