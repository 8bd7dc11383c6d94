"""The thesis's SNAP chain (section 4.3) as graphs built from config, one graph per resumable step.

    interferogram  Read pre, Read post -> TOPSAR-Split -> Apply-Orbit-File (each) -> Back-Geocoding
                   (pre-event = reference, first source) -> Enhanced-Spectral-Diversity -> Interferogram
                   -> TOPSAR-Deburst -> Multilook -> GoldsteinPhaseFiltering -> Write (BEAM-DIMAP)
    snaphu_export  Read -> SnaphuExport
    (snaphu)       SNAPHU on the export folder (:mod:`data_prep.snap.snaphu_folder`, no graph)
    geocode        Read wrapped, Read unwrapped (SNAPHU) -> SnaphuImport -> PhaseToDisplacement
                   -> BandMerge -> Terrain-Correction -> Write (NetCDF4-CF)

Every node is checked against :mod:`data_prep.snap.operators` when the graph
is built; the same :class:`Graph` is written as XML for ``gpt`` and walked
node by node by the esa_snappy runner.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from data_prep.snap.operators import MULTI_SOURCE, OPERATORS, GraphError, check_parameters, for_version, xml_value

S1_SLANT_RANGE_SPACING_M = 2.329562  # IW SLC (docs/processing.md, "SNAP facts the code relies on")

# Operators whose parameters come from config (conf/process.yaml, section ``graph``); Read and Write
# get their files from the chain.
CONFIGURED = ("TOPSAR-Split", "Apply-Orbit-File", "Back-Geocoding", "Enhanced-Spectral-Diversity", "Interferogram",
              "TOPSAR-Deburst", "Multilook", "GoldsteinPhaseFiltering", "SnaphuExport", "SnaphuImport",
              "PhaseToDisplacement", "BandMerge", "Terrain-Correction")


@dataclass
class Node:
    id: str
    operator: str
    sources: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)

    def add(self, operator: str, sources: list[str] | None = None, parameters: Mapping[str, Any] | None = None,
            node_id: str | None = None) -> str:
        node_id = node_id or operator
        if any(n.id == node_id for n in self.nodes):
            raise GraphError(f"graph '{self.name}': node id '{node_id}' used twice")
        parameters = {k: v for k, v in (parameters or {}).items() if v is not None}
        check_parameters(operator, parameters, where=f"graph '{self.name}', node '{node_id}'")
        sources = list(sources or [])
        known = {n.id for n in self.nodes}
        missing = [s for s in sources if s not in known]
        if missing:
            raise GraphError(f"graph '{self.name}', node '{node_id}': source(s) {missing} not defined before it")
        if len(sources) > 1 and operator not in MULTI_SOURCE:
            raise GraphError(f"graph '{self.name}', node '{node_id}': {operator} takes one source, got {sources}")
        self.nodes.append(Node(node_id, operator, sources, parameters))
        return node_id

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def outputs(self) -> list[Path]:
        """Files or folders the graph writes (Write files, SnaphuExport target folders)."""
        paths = [Path(n.parameters["file"]) for n in self.nodes if n.operator == "Write"]
        return paths + [Path(n.parameters["targetFolder"]) for n in self.nodes if n.operator == "SnaphuExport"]

    def to_xml(self) -> str:
        """The graph as gpt reads it: <node> with <operator>, <sources> (sourceProduct, .1, ...), <parameters>."""
        root = ET.Element("graph", id=self.name)
        ET.SubElement(root, "version").text = "1.0"
        for node in self.nodes:
            element = ET.SubElement(root, "node", id=node.id)
            ET.SubElement(element, "operator").text = node.operator
            sources = ET.SubElement(element, "sources")
            for i, source in enumerate(node.sources):
                ET.SubElement(sources, "sourceProduct" if i == 0 else f"sourceProduct.{i}", refid=source)
            parameters = ET.SubElement(element, "parameters", {"class": "com.bc.ceres.binding.dom.XppDomElement"})
            for name, value in node.parameters.items():
                ET.SubElement(parameters, name).text = xml_value(value)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"


def range_looks(target_pixel_m: float, incidence_deg: float, slant_spacing_m: float = S1_SLANT_RANGE_SPACING_M) -> int:
    """Range looks that bring the ground-range pixel to ``target_pixel_m`` (SNAP derives the azimuth looks).

    Ground-range spacing = slant spacing / sin(incidence); e.g. IW2 at 39 deg: 3.70 m, 30 m -> 8 looks.
    """
    ground = slant_spacing_m / math.sin(math.radians(incidence_deg))
    return max(1, round(target_pixel_m / ground))


def resolve_parameters(graph_cfg: Mapping[str, Mapping[str, Any]], multilook_cfg: Mapping[str, Any]
                       ) -> dict[str, dict[str, Any]]:
    """Config section ``graph`` -> parameters per operator, every name checked, Multilook looks derived."""
    unknown = sorted(set(graph_cfg) - set(CONFIGURED))
    if unknown:
        raise GraphError(f"graph config: unknown or non-configurable operator(s) {unknown}; "
                         f"configurable: {list(CONFIGURED)}")
    params = {alias: dict(graph_cfg.get(alias) or {}) for alias in CONFIGURED}
    for alias, values in params.items():
        check_parameters(alias, {k: v for k, v in values.items() if v is not None} | _placeholders(alias),
                         where="conf graph." + alias)
    looks = params["Multilook"]
    if looks.get("nRgLooks") is None:
        swath = str(params["TOPSAR-Split"]["subswath"])
        incidences = multilook_cfg["incidence_deg"]
        if swath not in incidences:
            raise GraphError(f"conf multilook.incidence_deg has no entry for sub-swath '{swath}' ({dict(incidences)})")
        looks["nRgLooks"] = range_looks(float(multilook_cfg["target_pixel_m"]), float(incidences[swath]))
    return params


def parameters_for_version(params: Mapping[str, Mapping[str, Any]], version: tuple[int, int, int]
                           ) -> dict[str, dict[str, Any]]:
    """Resolved parameters as SNAP ``version`` takes them (:func:`data_prep.snap.operators.for_version`)."""
    return {alias: for_version(alias, values, version, where="conf graph." + alias) for alias, values in params.items()}


def _placeholders(alias: str) -> dict[str, str]:
    """Parameters the chain fills in itself (files, folders), so config checks do not ask for them."""
    return {"targetFolder": "<chain>"} if alias == "SnaphuExport" else {}


def interferogram_graph(params: Mapping[str, Mapping[str, Any]], pre: Path, post: Path, target: Path) -> Graph:
    """SLC pair -> filtered, multilooked interferogram with coherence and elevation (BEAM-DIMAP ``target``)."""
    graph = Graph("interferogram")
    branches = []
    for suffix, slc in (("", pre), ("(2)", post)):  # pre-event first: the reference of Back-Geocoding
        read = graph.add("Read", parameters={"file": str(slc)}, node_id=f"Read{suffix}")
        split = graph.add("TOPSAR-Split", [read], params["TOPSAR-Split"], node_id=f"TOPSAR-Split{suffix}")
        branches.append(graph.add("Apply-Orbit-File", [split], params["Apply-Orbit-File"],
                                  node_id=f"Apply-Orbit-File{suffix}"))
    node = graph.add("Back-Geocoding", branches, params["Back-Geocoding"])
    for alias in ("Enhanced-Spectral-Diversity", "Interferogram", "TOPSAR-Deburst", "Multilook",
                  "GoldsteinPhaseFiltering"):
        node = graph.add(alias, [node], params[alias])
    graph.add("Write", [node], {"file": str(target), "formatName": "BEAM-DIMAP"})
    return graph


def snaphu_export_graph(params: Mapping[str, Mapping[str, Any]], wrapped: Path, target_folder: Path) -> Graph:
    """Filtered interferogram -> SnaphuExport's folder (wrapped phase, coherence, snaphu.conf)."""
    graph = Graph("snaphu_export")
    read = graph.add("Read", parameters={"file": str(wrapped)})
    graph.add("SnaphuExport", [read], {**params["SnaphuExport"], "targetFolder": str(target_folder)})
    return graph


def geocode_graph(params: Mapping[str, Mapping[str, Any]], wrapped: Path, unwrapped_hdr: Path, target: Path) -> Graph:
    """Wrapped product + SNAPHU result -> displacement, merged, terrain-corrected, NetCDF4-CF ``target``."""
    graph = Graph("geocode")
    read = graph.add("Read", parameters={"file": str(wrapped)})
    read_unw = graph.add("Read", parameters={"file": str(unwrapped_hdr), "formatName": "SNAPHU"}, node_id="Read(2)")
    imported = graph.add("SnaphuImport", [read, read_unw], params["SnaphuImport"])
    displacement = graph.add("PhaseToDisplacement", [imported], params["PhaseToDisplacement"])
    merged = graph.add("BandMerge", [imported, displacement], params["BandMerge"])
    corrected = graph.add("Terrain-Correction", [merged], params["Terrain-Correction"])
    graph.add("Write", [corrected], {"file": str(target), "formatName": "NetCDF4-CF"})
    return graph


def parse_graph_xml(text: str) -> Graph:
    """Read a graph XML back (tests, fake gpt): nodes in file order with sources and string parameters."""
    root = ET.fromstring(text)
    graph = Graph(root.get("id", "graph"))
    for element in root.findall("node"):
        sources = [s.get("refid") for s in sorted(element.find("sources"), key=_source_order)]
        parameters = {p.tag: (p.text or "") for p in element.find("parameters")}
        graph.nodes.append(Node(element.get("id"), element.findtext("operator"), sources, parameters))
    return graph


def _source_order(element: ET.Element) -> int:
    tag = element.tag
    return 0 if tag == "sourceProduct" else int(tag.rsplit(".", 1)[1])


__all__ = ["Graph", "Node", "OPERATORS", "geocode_graph", "interferogram_graph", "parse_graph_xml", "range_looks",
           "parameters_for_version", "resolve_parameters", "snaphu_export_graph"]
