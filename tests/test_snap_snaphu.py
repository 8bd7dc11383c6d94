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
    folder = snaphu_export_folder(tmp_path / "p", phase, phase + 0.3, cost="SMOOTH", init="MCF", tiles=(3, 2),
                                  overlap=(20, 30), nproc=2, tile_cost_thresh=350)
    job = read_conf(folder)
    assert (job.cost, job.init, job.ntiles, job.overlap, job.nproc, job.nlooks, job.width, job.tile_cost_thresh) == (
        "smooth", "mcf", (3, 2), (20, 30), 2, 23.8, 200, 350)
    assert job.phase_file.name == f"Phase_ifg{TAG}.snaphu.img" and job.corr_file.name == f"coh{TAG}.snaphu.img"
    seen = {}

    def recording_unwrap(igram, corr, nlooks, **kwargs):
        seen.update(nlooks=nlooks, corr=float(corr.mean()), phase=float(np.angle(igram).mean()), **kwargs)
        return np.zeros(igram.shape, np.float32), np.zeros(igram.shape, np.uint32)

    monkeypatch.setattr("data_prep.snap.snaphu_folder.dinsar.unwrap", recording_unwrap)
    unwrap_export_folder(folder)
    assert seen["nlooks"] == 23.8 and (seen["cost"], seen["init"]) == ("smooth", "mcf")
    assert seen["ntiles"] == (3, 2) and seen["tile_overlap"] == (20, 30) and seen["nproc"] == 2
    assert seen["tile_cost_thresh"] == 350
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


def test_tile_cost_threshold_reaches_snaphu(tmp_path, monkeypatch):
    import snaphu

    seen = {}
    real = snaphu.unwrap

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(snaphu, "unwrap", recording)
    truth = ramp(80, 90)
    folder = snaphu_export_folder(tmp_path / "p", np.angle(np.exp(1j * truth)).astype(np.float32),
                                  np.full((80, 90), 0.9, np.float32), tiles=(2, 2), overlap=(10, 10),
                                  tile_cost_thresh=250)
    unwrap_export_folder(folder)
    assert seen["tile_cost_thresh"] == 250 and seen["ntiles"] == (2, 2)


def test_every_conf_keyword_is_passed_on_or_refused(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    phase = np.zeros((4, 6), np.float32)
    folder = snaphu_export_folder(tmp_path / "a", phase, phase + 1, extra="LAMBDA 0.0554658\nDEFOMAX_CYCLE 1.2\n")
    with pytest.raises(SnaphuFolderError, match=r"snaphu.conf: keyword\(s\) \['DEFOMAX_CYCLE'\] cannot be passed to "
                                                r"snaphu-py"):
        read_conf(folder)
    topo = snaphu_export_folder(tmp_path / "b", phase, phase + 1, cost="TOPO")
    with pytest.raises(SnaphuFolderError, match="STATCOSTMODE TOPO not supported by snaphu-py"):
        read_conf(topo)
    # what SNAPHU reads only for TOPO or its own console/log is named in the log, not dropped unseen
    ok = snaphu_export_folder(tmp_path / "c", phase, phase + 1)
    assert read_conf(ok).not_used == ("DA", "DR", "LAMBDA", "LOGFILE", "TRANSMITMODE", "VERBOSE")
    unwrap_export_folder(ok)
    assert "['DA', 'DR', 'LAMBDA', 'LOGFILE', 'TRANSMITMODE', 'VERBOSE'] not passed to snaphu-py" in caplog.text
