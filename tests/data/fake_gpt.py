"""A stand-in for SNAP's ``gpt`` (installed by tests as an executable on PATH): records its arguments and
writes what the real graphs would write, shaped by the verified band names and units.

    interferogram graph -> BEAM-DIMAP ``.dim`` + ``.data`` (ENVI phase, coherence, intensity of a known ramp)
    snaphu_export graph -> ``<targetFolder>/ifg/`` in SnaphuExport's layout (snap_products.snaphu_export_folder)
    geocode graph       -> NetCDF4-CF export from the SNAPHU result (snap_products.write_export)

Environment: ``FAKE_GPT_LOG`` (JSON lines of argv), ``FAKE_GPT_FAIL_ON`` (an operator alias: the run writes
a partial output, prints an error and exits 1 when the graph holds it), ``FAKE_GPT_SNAP_VERSION`` (what
``gpt --diag`` reports, default 14.0.0), ``FAKE_GPT_HIDE_VERSION=1`` (a --diag output without the version
line, as from a broken install). Like the real
gpt, a graph holding a parameter the reported version lacks fails ("Unknown element").
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from data.snap_products import TAG, snaphu_export_folder, write_envi, write_export
from data_prep.snap.graph import parse_graph_xml

S1_WAVELENGTH_M = 0.05546576  # literal: importing insarslide.contract.spec would load the runtime package

SHAPE = (40, 50)

# Parameters each SNAP release added (microwave-toolbox operator sources at tags 12.0.0, 13.0.0, 13.0.1, 14.0.0),
# written out here rather than imported so the fake does not share the table under test.
ADDED_IN = {
    (13, 0, 1): {("TOPSAR-Split", "enableSingleSwathMode")},
    (14, 0, 0): {("Interferogram", "cohWinSizeMeters"), ("Interferogram", "subtractResidualRamp"),
                 ("GoldsteinPhaseFiltering", "useAdaptiveAlpha"), ("GoldsteinPhaseFiltering", "alphaMin"),
                 ("GoldsteinPhaseFiltering", "alphaMax"), ("GoldsteinPhaseFiltering", "fftSizeMeters"),
                 ("Terrain-Correction", "applyAPDCorrection")},
}


def snap_version() -> str:
    return os.environ.get("FAKE_GPT_SNAP_VERSION", "14.0.0")


def unknown_elements(graph) -> list[tuple[str, str]]:
    """(node id, parameter) pairs that the reported SNAP version does not know."""
    version = tuple(int(x) for x in snap_version().split("."))
    lacking = set().union(*(names for since, names in ADDED_IN.items() if version < since))
    return [(n.id, name) for n in graph.nodes for name in n.parameters if (n.operator, name) in lacking]


def true_unwrapped(shape=SHAPE) -> np.ndarray:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return 0.25 * rows + 0.15 * cols + 0.05  # rad: about 3 fringes over the grid


def read_envi(img: Path) -> np.ndarray:
    """Big-endian float32 ENVI image with its header's lines and samples (what write_envi wrote)."""
    header = dict(line.split(" = ", 1) for line in img.with_suffix(".hdr").read_text().splitlines() if " = " in line)
    return np.fromfile(img, dtype=">f4").reshape(int(header["lines"]), int(header["samples"]))


def write_dimap(dim: Path) -> None:
    data = dim.with_suffix(".data")
    data.mkdir(parents=True)
    unwrapped = true_unwrapped()
    write_envi(data / f"Phase_ifg{TAG}.img", np.angle(np.exp(1j * unwrapped)), f"Phase_ifg{TAG}")
    write_envi(data / f"coh{TAG}.img", np.full(SHAPE, 0.85), f"coh{TAG}")
    write_envi(data / f"Intensity_ifg{TAG}.img", np.full(SHAPE, 0.2), f"Intensity_ifg{TAG}")
    dim.write_text("<?xml version='1.0'?><Dimap_Document name='ifg.dim'><DATASET_NAME>ifg</DATASET_NAME>"
                   "</Dimap_Document>\n")


def write_netcdf_export(graph, target: Path) -> None:
    wrapped = Path(graph.node("Read").parameters["file"]).with_suffix(".data")
    unwrapped_hdr = Path(graph.node("Read(2)").parameters["file"])
    unwrapped = read_envi(unwrapped_hdr.with_suffix(".img")).astype(np.float64)
    rows, cols = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(np.float64)
    fields = {
        "phase": read_envi(wrapped / f"Phase_ifg{TAG}.img").astype(np.float64),
        "coherence": read_envi(wrapped / f"coh{TAG}.img").astype(np.float64),
        "intensity": read_envi(wrapped / f"Intensity_ifg{TAG}.img").astype(np.float64),
        "elevation": 250.0 + 4.0 * rows,
        "displacement": -S1_WAVELENGTH_M / (4 * np.pi) * unwrapped,  # PhaseToDisplacement since 2016
        "unwrapped_phase": unwrapped,
        "local_incidence_angle": 30.0 + 0.2 * cols,
    }
    for values in fields.values():  # Terrain-Correction: no-data outside the image (first row here)
        values[0] = np.nan
    write_export(target, fields)


def main(argv: list[str]) -> int:
    with open(os.environ["FAKE_GPT_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    if argv[:1] == ["--diag"]:
        if os.environ.get("FAKE_GPT_HIDE_VERSION") != "1":
            print(f"SNAP Release version {snap_version()}")
        print("SNAP home: /opt/snap/bin/..\nJava version: 21.0.2\nProcessors: 2\nMax memory: 3.9 GB")
        return 0
    graph = parse_graph_xml(Path(argv[0]).read_text())
    print(f"Executing processing graph {graph.name}")
    unknown = unknown_elements(graph)
    if unknown:
        node, name = unknown[0]
        print(f"Error: [NodeId: {node}] Unknown element '{name}'")
        return 1
    operators = [n.operator for n in graph.nodes]
    if os.environ.get("FAKE_GPT_FAIL_ON") in operators:
        for path in graph.outputs():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"partial")
        print(f"Error: [NodeId: {os.environ['FAKE_GPT_FAIL_ON']}] java.lang.OutOfMemoryError: Java heap space")
        return 1
    for node in graph.nodes:
        if node.operator == "Write" and node.parameters["formatName"] == "BEAM-DIMAP":
            write_dimap(Path(node.parameters["file"]))
        elif node.operator == "Write" and node.parameters["formatName"] == "NetCDF4-CF":
            write_netcdf_export(graph, Path(node.parameters["file"]))
        elif node.operator == "SnaphuExport":
            data = Path(graph.node("Read").parameters["file"]).with_suffix(".data")
            p = node.parameters
            snaphu_export_folder(Path(p["targetFolder"]) / "ifg", read_envi(data / f"Phase_ifg{TAG}.img"),
                                 read_envi(data / f"coh{TAG}.img"), cost=p["statCostMode"], init=p["initMethod"],
                                 tiles=(int(p["numberOfTileRows"]), int(p["numberOfTileCols"])),
                                 overlap=(int(p["rowOverlap"]), int(p["colOverlap"])),
                                 nproc=int(p["numberOfProcessors"]),
                                 tile_cost_thresh=int(p.get("tileCostThreshold", 500)))
    print("Done.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
