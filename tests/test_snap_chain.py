"""The SNAP chain end to end on a fake ``gpt`` (tests/data/fake_gpt.py): scene, manifest, resume, disk check."""

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from data.fake_gpt import true_unwrapped
from data_prep.snap.chain import DiskSpaceError, run_event
from data_prep.snap.runners import SnapError
from insarslide.contract.scene import open_scene
from insarslide.contract.validation import validate_scene
from insarslide.contract.spec import BANDS, S1_WAVELENGTH_M
from conftest import process_config, worktree_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_gpt(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "gpt"
    script.parent.mkdir()
    paths = [str(REPO / "tests"), str(REPO / "src"), str(REPO)]
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path[:0] = {paths!r}\n"
                      "from data.fake_gpt import main\nsys.exit(main(sys.argv[1:]))\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "gpt_calls.jsonl"
    monkeypatch.setenv("FAKE_GPT_LOG", str(calls))
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAKE_GPT_FAIL_ON", raising=False)
    monkeypatch.delenv("FAKE_GPT_SNAP_VERSION", raising=False)
    monkeypatch.delenv("FAKE_GPT_HIDE_VERSION", raising=False)

    def graph_calls():
        lines = calls.read_text().splitlines() if calls.exists() else []
        return [Path(json.loads(line)[0]).stem for line in lines if json.loads(line)[0] != "--diag"]

    return graph_calls


@pytest.fixture
def slc_pair(tmp_path):
    pre = tmp_path / "slc" / "S1A_IW_SLC__1SDV_20220603T102133_20220603T102200_043500_053000_ABCD.zip"
    post = tmp_path / "slc" / "S1A_IW_SLC__1SDV_20220615T102134_20220615T102201_043675_053500_EF01.zip"
    pre.parent.mkdir()
    pre.write_bytes(b"pre-event SLC " * 100)
    post.write_bytes(b"post-event SLC " * 100)
    return pre, post


def chain_config(tmp_path, *overrides):
    return process_config("event=lombok_2018", f"out_dir={tmp_path / 'out'}", "snap.threads=2", "snap.cache=1G",
                          *overrides)


def test_chain_end_to_end_on_fake_gpt(tmp_path, fake_gpt, slc_pair):
    pre, post = slc_pair
    scene_path = run_event(chain_config(tmp_path), pre, post)
    assert fake_gpt() == ["interferogram", "snaphu_export", "geocode"]
    calls = [json.loads(line) for line in (tmp_path / "gpt_calls.jsonl").read_text().splitlines()]
    work = tmp_path / "out" / "lombok_2018" / "work"
    assert [str(work / "interferogram.xml"), "-q", "2", "-c", "1G"] in calls
    assert (work / "geocode.gpt.log").read_text().startswith("Executing processing graph geocode")

    report = validate_scene(scene_path)
    assert report.ok, report.problems
    with open_scene(scene_path) as scene:
        bands, _, valid = scene.read_window(0, 40, 0, 50)
        assert scene.attrs["region"] == "Lombok, Indonesia" and scene.attrs["source"] == "snap"
        assert scene.attrs["pre_date"] == "2022-06-03" and scene.attrs["post_date"] == "2022-06-15"  # SNAP's tag
    assert valid[0].sum() == 0 and valid[1:].all()  # Terrain-Correction's fill 0 stayed no-data
    unwrapped = bands[BANDS.index("unwrapped_phase")][1:]
    cycles = (unwrapped - true_unwrapped()[1:]) / (2 * np.pi)  # SNAPHU recovered the ramp up to 2 pi k
    assert np.abs(cycles - np.round(cycles)).max() < 1e-3 and np.ptp(np.round(cycles)) == 0
    np.testing.assert_allclose(bands[BANDS.index("displacement")][1:], -S1_WAVELENGTH_M / (4 * np.pi) * unwrapped,
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(bands[BANDS.index("intensity")][1:], 0.2, rtol=1e-5)

    manifest = json.loads((tmp_path / "out" / "lombok_2018" / "manifest.json").read_text())
    assert manifest["inputs"]["pre"]["sha256"] == hashlib.sha256(pre.read_bytes()).hexdigest()
    assert manifest["inputs"]["post"]["size"] == post.stat().st_size
    assert "14.0.0" in manifest["versions"]["snap"] and manifest["versions"]["snaphu"].startswith("snaphu-py")
    assert manifest["parameters"]["graph"]["Multilook"]["nRgLooks"] == 8
    assert [s["status"] for s in manifest["steps"].values()] == ["done"] * 5
    assert manifest["steps"]["scene"]["outputs"][0]["path"] == str(scene_path)
    notes = manifest["steps"]["scene"]["notes"]
    assert any("WGS84" in n for n in notes) and any("since 2016" in n for n in notes)
    assert any("decibels" in n for n in notes)

    run_event(chain_config(tmp_path), pre, post)  # nothing left to do
    assert fake_gpt() == ["interferogram", "snaphu_export", "geocode"]


def test_failure_midway_leaves_a_consistent_manifest_and_a_rerun_resumes(tmp_path, fake_gpt, slc_pair, monkeypatch):
    pre, post = slc_pair
    monkeypatch.setenv("FAKE_GPT_FAIL_ON", "Terrain-Correction")
    with pytest.raises(SnapError) as err:
        run_event(chain_config(tmp_path), pre, post)
    assert "exit 1" in str(err.value) and "OutOfMemoryError" in str(err.value) and "geocode.gpt.log" in str(err.value)
    event_dir = tmp_path / "out" / "lombok_2018"
    manifest = json.loads((event_dir / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["steps"].items()} == {
        "interferogram": "done", "snaphu_export": "done", "snaphu": "done", "geocode": "failed"}
    assert not (event_dir / "work" / "export.nc").exists()  # the partial file never got the final name
    assert not (event_dir / "work" / ".staging" / "geocode").exists()
    assert not (tmp_path / "out" / "scenes" / "lombok_2018.nc").exists()

    monkeypatch.delenv("FAKE_GPT_FAIL_ON")
    scene = run_event(chain_config(tmp_path), pre, post)
    assert fake_gpt() == ["interferogram", "snaphu_export", "geocode", "geocode"]  # only the failed step again
    assert validate_scene(scene).ok


def test_changed_parameter_or_input_redoes_the_steps_it_feeds(tmp_path, fake_gpt, slc_pair):
    pre, post = slc_pair
    run_event(chain_config(tmp_path), pre, post)
    run_event(chain_config(tmp_path, "graph.Terrain-Correction.pixelSpacingInMeter=20.0"), pre, post)
    assert fake_gpt() == ["interferogram", "snaphu_export", "geocode", "geocode"]
    xml = (tmp_path / "out" / "lombok_2018" / "work" / "geocode.xml").read_text()
    assert "<pixelSpacingInMeter>20.0</pixelSpacingInMeter>" in xml
    pre.write_bytes(b"another pre-event SLC " * 100)
    run_event(chain_config(tmp_path, "graph.Terrain-Correction.pixelSpacingInMeter=20.0"), pre, post)
    assert fake_gpt()[4:] == ["interferogram"]  # same fake products after it: later steps see unchanged inputs


def test_disk_space_is_checked_before_a_step_starts(tmp_path, fake_gpt, slc_pair):
    pre, post = slc_pair
    with pytest.raises(DiskSpaceError, match="step 'interferogram' needs about"):
        run_event(chain_config(tmp_path, "disk.margin_gib=1000000"), pre, post)
    assert fake_gpt() == []


def test_unknown_parameter_in_config_is_refused_before_anything_runs(tmp_path, fake_gpt, slc_pair):
    from data_prep.snap.operators import GraphError

    with pytest.raises(GraphError, match="cohWinSize"):
        run_event(chain_config(tmp_path, "+graph.Interferogram.cohWinSize=5"), *slc_pair)
    assert fake_gpt() == []


def _written_parameters(tmp_path, operator):
    from data_prep.snap.graph import parse_graph_xml

    graph = parse_graph_xml((tmp_path / "out" / "lombok_2018" / "work" / "interferogram.xml").read_text())
    return next(n for n in graph.nodes if n.operator == operator).parameters


def test_snap_13_gets_only_parameters_it_knows(tmp_path, fake_gpt, slc_pair, monkeypatch):
    monkeypatch.setenv("FAKE_GPT_SNAP_VERSION", "13.0.4")  # the fake gpt then refuses 14-only elements, as gpt does
    assert validate_scene(run_event(chain_config(tmp_path), *slc_pair)).ok
    goldstein = _written_parameters(tmp_path, "GoldsteinPhaseFiltering")
    assert goldstein == {"alpha": "1.0", "FFTSizeString": "64", "windowSizeString": "3", "useCoherenceMask": "false",
                         "coherenceThreshold": "0.2"}  # useAdaptiveAlpha (14.0.0) left out: false is what 13 does
    assert fake_gpt() == ["interferogram", "snaphu_export", "geocode"]
    manifest = json.loads((tmp_path / "out" / "lombok_2018" / "manifest.json").read_text())
    assert manifest["versions"]["snap_release"] == "13.0.4"


def test_snap_14_gets_use_adaptive_alpha_written(tmp_path, fake_gpt, slc_pair):
    run_event(chain_config(tmp_path), *slc_pair)  # the fake reports 14.0.0
    assert _written_parameters(tmp_path, "GoldsteinPhaseFiltering")["useAdaptiveAlpha"] == "false"


def test_a_set_parameter_newer_than_snap_is_refused_before_anything_runs(tmp_path, fake_gpt, slc_pair, monkeypatch):
    from data_prep.snap.operators import GraphError

    monkeypatch.setenv("FAKE_GPT_SNAP_VERSION", "13.0.4")
    with pytest.raises(GraphError, match=r"GoldsteinPhaseFiltering \(conf graph.GoldsteinPhaseFiltering\): parameter "
                                         r"'alphaMin' = 0.3 needs SNAP 14.0.0 or newer \(installed: 13.0.4\)"):
        run_event(chain_config(tmp_path, "+graph.GoldsteinPhaseFiltering.alphaMin=0.3"), *slc_pair)
    with pytest.raises(GraphError, match=r"'useAdaptiveAlpha' = true needs SNAP 14.0.0"):
        run_event(chain_config(tmp_path, "graph.GoldsteinPhaseFiltering.useAdaptiveAlpha=true"), *slc_pair)
    with pytest.raises(GraphError, match=r"'applyAPDCorrection' = true needs SNAP 14.0.0"):
        run_event(chain_config(tmp_path, "+graph.Terrain-Correction.applyAPDCorrection=true"), *slc_pair)
    assert fake_gpt() == []  # no graph ran
    assert not (tmp_path / "out" / "lombok_2018" / "work").exists()


def test_snap_version_from_config_when_gpt_does_not_say(tmp_path, fake_gpt, slc_pair, monkeypatch):
    monkeypatch.setenv("FAKE_GPT_SNAP_VERSION", "12.0.0")
    monkeypatch.setenv("FAKE_GPT_HIDE_VERSION", "1")
    with pytest.raises(SnapError, match=r"cannot tell the SNAP version .*set snap_version="):
        run_event(chain_config(tmp_path), *slc_pair)
    assert fake_gpt() == []
    assert validate_scene(run_event(chain_config(tmp_path, "snap_version=12.0.0"), *slc_pair)).ok
    from data_prep.snap.operators import GraphError

    with pytest.raises(GraphError, match=r"SNAP 11.0.0 is older than the chain supports \(12.0.0 to 14.0.0\)"):
        run_event(chain_config(tmp_path, "snap_version=11.0.0"), *slc_pair)


def test_graph_tile_cost_threshold_reaches_snaphu(tmp_path, fake_gpt, slc_pair, monkeypatch):
    import snaphu

    seen = []
    real = snaphu.unwrap
    monkeypatch.setattr(snaphu, "unwrap", lambda *a, **k: seen.append(k["tile_cost_thresh"]) or real(*a, **k))
    run_event(chain_config(tmp_path, "graph.SnaphuExport.tileCostThreshold=321"), *slc_pair)
    assert seen == [321]


@pytest.mark.e2e
@pytest.mark.slow
def test_events_in_parallel_through_the_hydra_joblib_launcher(tmp_path, fake_gpt):
    import subprocess

    for event, dates in (("lombok_2018", ("20180811", "20180823")), ("iburi_2018", ("20180905", "20180917"))):
        folder = tmp_path / "slc" / event
        folder.mkdir(parents=True)
        for i, day in enumerate(dates):
            (folder / f"S1A_IW_SLC__1SDV_{day}T102133_{day}T102200_043500_053000_000{i}.zip").write_bytes(day.encode())
    env = worktree_env()
    done = subprocess.run([sys.executable, "-m", "data_prep.process", "-m", "event=lombok_2018,iburi_2018",
                           f"slc_dir={tmp_path / 'slc'}", f"out_dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr  # the joblib launcher
    for event in ("lombok_2018", "iburi_2018"):
        assert validate_scene(tmp_path / "out" / "scenes" / f"{event}.nc").ok
        manifest = json.loads((tmp_path / "out" / event / "manifest.json").read_text())
        assert Path(manifest["inputs"]["pre"]["path"]).name.split("_")[5].startswith(
            {"lombok_2018": "20180811", "iburi_2018": "20180905"}[event])
    assert sorted(fake_gpt()) == sorted(["interferogram", "snaphu_export", "geocode"] * 2)
