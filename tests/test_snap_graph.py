"""Graphs built from conf/process.yaml, checked against the operator table; the gpt and esa_snappy runners."""

import sys
import types
from pathlib import Path

import pytest

from data_prep.snap.graph import (geocode_graph, interferogram_graph, parameters_for_version, parse_graph_xml,
                                  range_looks, resolve_parameters, snaphu_export_graph)
from data_prep.snap.operators import OPERATORS, GraphError, check_parameters, parse_version
from data_prep.snap.runners import SnapError, SnappyRunner, find_gpt, import_snappy
from conftest import process_config


def thesis_parameters(*overrides):
    cfg = process_config("event=lombok_2018", *overrides)
    return resolve_parameters(cfg["graph"], cfg["multilook"])


def test_interferogram_graph_order_sources_and_values():
    graph = parse_graph_xml(interferogram_graph(thesis_parameters(), Path("/slc/pre.zip"), Path("/slc/post.zip"),
                                                Path("/work/ifg.dim")).to_xml())
    assert [n.operator for n in graph.nodes] == [
        "Read", "TOPSAR-Split", "Apply-Orbit-File", "Read", "TOPSAR-Split", "Apply-Orbit-File", "Back-Geocoding",
        "Enhanced-Spectral-Diversity", "Interferogram", "TOPSAR-Deburst", "Multilook", "GoldsteinPhaseFiltering",
        "Write"]
    # Back-Geocoding: the pre-event branch is sourceProduct (the reference), the post-event one sourceProduct.1
    reference, secondary = graph.node("Back-Geocoding").sources
    assert graph.node(graph.node(graph.node(reference).sources[0]).sources[0]).parameters["file"] == "/slc/pre.zip"
    assert graph.node(graph.node(graph.node(secondary).sources[0]).sources[0]).parameters["file"] == "/slc/post.zip"
    for node in graph.nodes:
        assert set(node.parameters) <= set(OPERATORS[node.operator]), node.id
    assert graph.node("TOPSAR-Split").parameters["subswath"] == "IW2"
    assert graph.node("Interferogram").parameters["subtractTopographicPhase"] == "true"
    assert graph.node("Interferogram").parameters["outputElevation"] == "true"
    assert graph.node("Multilook").parameters["nRgLooks"] == "8"
    # values whose defaults changed between SNAP versions are written out
    for alias in ("Back-Geocoding", "Interferogram"):
        assert graph.node(alias).parameters["demName"] == "Copernicus 30m Global DEM"
    assert graph.node("GoldsteinPhaseFiltering").parameters["useAdaptiveAlpha"] == "false"
    assert graph.node("Write").parameters == {"file": "/work/ifg.dim", "formatName": "BEAM-DIMAP"}


def test_export_and_geocode_graphs():
    params = thesis_parameters("graph.Terrain-Correction.pixelSpacingInMeter=20.0")
    export = parse_graph_xml(snaphu_export_graph(params, Path("/w/ifg.dim"), Path("/w/snaphu")).to_xml())
    assert [n.operator for n in export.nodes] == ["Read", "SnaphuExport"]
    assert export.node("SnaphuExport").parameters["targetFolder"] == "/w/snaphu"
    assert export.node("SnaphuExport").parameters["statCostMode"] == "DEFO"
    geocode = parse_graph_xml(
        geocode_graph(params, Path("/w/ifg.dim"), Path("/w/u.snaphu.hdr"), Path("/w/e.nc")).to_xml())
    assert [n.operator for n in geocode.nodes] == ["Read", "Read", "SnaphuImport", "PhaseToDisplacement", "BandMerge",
                                                   "Terrain-Correction", "Write"]
    assert geocode.node("Read(2)").parameters == {"file": "/w/u.snaphu.hdr", "formatName": "SNAPHU"}
    assert geocode.node("SnaphuImport").sources == ["Read", "Read(2)"]
    assert geocode.node("BandMerge").sources == ["SnaphuImport", "PhaseToDisplacement"]
    tc = geocode.node("Terrain-Correction").parameters
    assert tc["pixelSpacingInMeter"] == "20.0" and tc["saveLocalIncidenceAngle"] == "true" and tc["saveDEM"] == "true"
    assert tc["demName"] == "Copernicus 30m Global DEM" and tc["mapProjection"] == "WGS84(DD)"
    assert geocode.node("Write").parameters["formatName"] == "NetCDF4-CF"


def test_unknown_or_missing_parameters_are_refused_by_name():
    with pytest.raises(GraphError, match=r"Interferogram.*\['cohWindow'\]"):
        thesis_parameters("+graph.Interferogram.cohWindow=5")
    with pytest.raises(GraphError, match="demName"):
        thesis_parameters("graph.Back-Geocoding.demName=null")
    # useAdaptiveAlpha (on by default from SNAP 14) must be set where the installed version has it
    without = thesis_parameters("graph.GoldsteinPhaseFiltering.useAdaptiveAlpha=null")
    with pytest.raises(GraphError, match=r"parameter 'useAdaptiveAlpha' must be set"):
        parameters_for_version(without, (14, 0, 0))
    assert "useAdaptiveAlpha" not in parameters_for_version(without, (13, 0, 4))["GoldsteinPhaseFiltering"]
    with pytest.raises(GraphError, match="Speckle-Filter"):
        thesis_parameters("+graph.Speckle-Filter={filter: Lee}")
    with pytest.raises(GraphError, match="unknown SNAP operator"):
        check_parameters("Terrain-Flattening", {})


def test_parameters_newer_than_the_installed_snap():
    assert parse_version("SNAP Release version 13.0.4") == (13, 0, 4) and parse_version("12.0") == (12, 0, 0)
    thesis = thesis_parameters()
    on_13 = parameters_for_version(thesis, (13, 0, 4))
    assert "useAdaptiveAlpha" not in on_13["GoldsteinPhaseFiltering"]  # thesis false = what 13 does
    assert parameters_for_version(thesis, (14, 0, 0))["GoldsteinPhaseFiltering"]["useAdaptiveAlpha"] is False
    # at SNAP's own default (what older versions do): left out; anything else: refused, naming the version
    ramp = thesis_parameters("+graph.Interferogram.subtractResidualRamp=false",
                             "+graph.Interferogram.cohWinSizeMeters=0")
    on_13 = parameters_for_version(ramp, (13, 0, 4))["Interferogram"]
    assert {"subtractResidualRamp", "cohWinSizeMeters"}.isdisjoint(on_13)
    assert parameters_for_version(ramp, (14, 0, 0))["Interferogram"]["subtractResidualRamp"] is False
    for operator, name, value, since in (("Interferogram", "cohWinSizeMeters", 30, "14.0.0"),
                                         ("Interferogram", "subtractResidualRamp", "true", "14.0.0"),
                                         ("GoldsteinPhaseFiltering", "fftSizeMeters", 500, "14.0.0"),
                                         ("GoldsteinPhaseFiltering", "alphaMax", 0.8, "14.0.0"),
                                         ("Terrain-Correction", "applyAPDCorrection", "true", "14.0.0"),
                                         ("TOPSAR-Split", "enableSingleSwathMode", "true", "13.0.1")):
        with pytest.raises(GraphError, match=rf"'{name}' = {value} needs SNAP {since} or newer \(installed: 13.0.0\)"):
            parameters_for_version(thesis_parameters(f"+graph.{operator}.{name}={value}"), (13, 0, 0))
    single = thesis_parameters("+graph.TOPSAR-Split.enableSingleSwathMode=true")
    assert parameters_for_version(single, (13, 0, 1))["TOPSAR-Split"]["enableSingleSwathMode"] is True


def test_range_looks_from_the_target_pixel():
    # ground range = 2.329562 / sin(incidence): IW2 39.05 deg -> 3.698 m, IW1 33.6 deg -> 4.210 m
    assert range_looks(30.0, 39.05) == 8  # 8.11
    assert range_looks(30.0, 33.6) == 7  # 7.13
    assert range_looks(90.0, 39.05) == 24  # 24.3
    assert thesis_parameters("graph.TOPSAR-Split.subswath=IW1")["Multilook"]["nRgLooks"] == 7
    assert thesis_parameters("graph.Multilook.nRgLooks=4")["Multilook"]["nRgLooks"] == 4


class RecordingSnappy(types.ModuleType):
    """A stand-in for esa_snappy that records every call and writes the files a Write would."""

    def __init__(self):
        super().__init__("esa_snappy")
        self.calls = []
        calls = self.calls

        class HashMap(dict):
            def put(self, key, value):
                self[key] = value

        class Product:
            def __init__(self, label):
                self.label = label

            def dispose(self):
                calls.append(("dispose", self.label))

        class Reader:
            def __init__(self, fmt):
                self.fmt = fmt

            def readProductNodes(self, path, subset):
                calls.append(("read", path, self.fmt))
                return Product(f"read:{path}")

        class ProductIO:
            @staticmethod
            def readProduct(path):
                calls.append(("read", path, None))
                return Product(f"read:{path}")

            @staticmethod
            def getProductReader(fmt):
                return Reader(fmt)

            @staticmethod
            def writeProduct(product, path, fmt):
                calls.append(("write", product.label, path, fmt))
                Path(path).mkdir(parents=True, exist_ok=True) if fmt == "Snaphu" else Path(path).write_text("x")

        class GPF:
            @staticmethod
            def createProduct(alias, parameters, source):
                sources = [s.label for s in source] if isinstance(source, list) else [source.label]
                calls.append(("create", alias, dict(parameters), sources))
                return Product(alias)

        self.HashMap, self.ProductIO, self.GPF = HashMap, ProductIO, GPF


def test_snappy_runner_walks_the_same_graph(tmp_path, monkeypatch):
    stub = RecordingSnappy()
    monkeypatch.setitem(sys.modules, "esa_snappy", stub)
    params = thesis_parameters()
    SnappyRunner().run(geocode_graph(params, Path("/w/ifg.dim"), Path("/w/u.snaphu.hdr"), tmp_path / "e.nc"), tmp_path)
    created = [c for c in stub.calls if c[0] == "create"]
    assert [c[1] for c in created] == ["SnaphuImport", "PhaseToDisplacement", "BandMerge", "Terrain-Correction"]
    assert created[0][3] == ["read:/w/ifg.dim", "read:/w/u.snaphu.hdr"]  # wrapped first, SNAPHU product second
    assert created[2][3] == ["SnaphuImport", "PhaseToDisplacement"]
    assert created[3][2]["pixelSpacingInMeter"] == 30.0 and created[3][2]["saveLocalIncidenceAngle"] is True
    assert ("read", "/w/u.snaphu.hdr", "SNAPHU") in stub.calls
    assert ("write", "Terrain-Correction", str(tmp_path / "e.nc"), "NetCDF4-CF") in stub.calls

    stub.calls.clear()
    SnappyRunner().run(snaphu_export_graph(params, Path("/w/ifg.dim"), tmp_path / "snaphu"), tmp_path)
    assert ("write", "SnaphuExport", str(tmp_path / "snaphu"), "Snaphu") in stub.calls


def test_snappy_runner_reports_a_missing_output(tmp_path, monkeypatch):
    stub = RecordingSnappy()
    stub.ProductIO.writeProduct = staticmethod(lambda product, path, fmt: None)  # "succeeds", writes nothing
    monkeypatch.setitem(sys.modules, "esa_snappy", stub)
    graph = geocode_graph(thesis_parameters(), Path("/w/ifg.dim"), Path("/w/u.hdr"), tmp_path / "e.nc")
    with pytest.raises(SnapError, match="e.nc"):
        SnappyRunner().run(graph, tmp_path)


def test_without_snap_the_errors_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "esa_snappy", None)  # import fails as it does without SNAP
    with pytest.raises(SnapError) as err:
        import_snappy()
    assert "esa-snappy" in str(err.value) and "SNAP_HOME" in str(err.value)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SNAP_HOME", raising=False)
    with pytest.raises(SnapError) as err:
        find_gpt(None)
    assert "SNAP_HOME" in str(err.value) and "backend=numpy" in str(err.value)
    with pytest.raises(SnapError, match="not an executable"):
        find_gpt(str(tmp_path / "gpt"))


def test_gpt_failure_reports_the_log_tail(tmp_path):
    from data_prep.snap.runners import GptRunner

    gpt = tmp_path / "gpt"
    gpt.write_text("#!/bin/sh\necho 'Executing processing graph'\necho 'Error: [NodeId: Back-Geocoding] no orbit' >&2\n"
                   "exit 3\n")
    gpt.chmod(0o755)
    graph = snaphu_export_graph(thesis_parameters(), Path("/w/ifg.dim"), tmp_path / "snaphu")
    with pytest.raises(SnapError) as err:
        GptRunner(str(gpt), threads=4, cache="2G").run(graph, tmp_path / "work")
    assert "exit 3" in str(err.value) and "no orbit" in str(err.value)
    assert (tmp_path / "work" / "snaphu_export.xml").is_file()
    assert "no orbit" in (tmp_path / "work" / "snaphu_export.gpt.log").read_text()
    gpt.write_text("#!/bin/sh\nexit 0\n")  # exit 0 but no output: reported too
    with pytest.raises(SnapError, match="did not write"):
        GptRunner(str(gpt)).run(graph, tmp_path / "work")
