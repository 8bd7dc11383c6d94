"""One event through the SNAP / SNAPHU chain, resumable: SLC pair -> canonical scene file.

Steps (each recorded in ``<out_dir>/<event>/manifest.json``):

    interferogram   gpt/esa_snappy graph -> work/ifg.dim (+ ifg.data)
    snaphu_export   gpt/esa_snappy graph -> work/snaphu/<product>/ (phase, coherence, snaphu.conf)
    snaphu          PyPI snaphu on that folder -> its UnwPhase_*.snaphu.img
    geocode         gpt/esa_snappy graph -> work/export.nc (NetCDF4-CF, terrain-corrected)
    scene           the one scene reader/writer -> <scene_dir>/<event>.nc

A step writes into ``work/.staging/<step>/`` and its outputs are moved into
place only when it succeeded, so an interrupted step leaves no final file; the
disk space a step needs is estimated from its inputs and checked first.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from data_prep.snap import graph as graphs
from data_prep.snap.convert import export_to_scene
from data_prep.snap.manifest import MANIFEST_NAME, Manifest
from data_prep.snap.operators import NEWEST_CHECKED, SUPPORTED_VERSIONS, GraphError, check_supported, parse_version
from data_prep.snap.runners import Runner, SnapError, make_runner
from data_prep.snap.snaphu_folder import find_export_folder, read_conf, unwrap_export_folder

log = logging.getLogger(__name__)

# The operators whose parameters each graph step depends on (its fingerprint covers only these).
STEP_OPERATORS = {
    "interferogram": ("TOPSAR-Split", "Apply-Orbit-File", "Back-Geocoding", "Enhanced-Spectral-Diversity",
                      "Interferogram", "TOPSAR-Deburst", "Multilook", "GoldsteinPhaseFiltering"),
    "snaphu_export": ("SnaphuExport",),
    "geocode": ("SnaphuImport", "PhaseToDisplacement", "BandMerge", "Terrain-Correction"),
}
GIB = 1 << 30


class DiskSpaceError(OSError):
    """Not enough free space for a step; says how much it needs and where."""


@dataclass(frozen=True)
class EventPaths:
    event_dir: Path
    scene: Path

    @property
    def work(self) -> Path:
        return self.event_dir / "work"

    @property
    def manifest(self) -> Path:
        return self.event_dir / MANIFEST_NAME

    @property
    def wrapped(self) -> Path:
        return self.work / "ifg.dim"

    @property
    def snaphu(self) -> Path:
        return self.work / "snaphu"

    @property
    def export(self) -> Path:
        return self.work / "export.nc"

    def staging(self, step: str) -> Path:
        return self.work / ".staging" / step


def dimap_parts(dim: Path) -> list[Path]:
    """A BEAM-DIMAP product is a ``.dim`` header and its ``.data`` folder."""
    return [dim, dim.with_suffix(".data")]


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.exists():
            total += path.stat().st_size
    return total


def check_disk(step: str, inputs: list[Path], factor: float, margin_gib: float, where: Path) -> int:
    """Refuse a step whose estimated output (``factor`` x its inputs, plus a margin) exceeds the free space."""
    where.mkdir(parents=True, exist_ok=True)
    need = int(factor * _size(inputs) + margin_gib * GIB)
    free = shutil.disk_usage(where).free
    if need > free:
        raise DiskSpaceError(f"step '{step}' needs about {need / GIB:.2f} GiB ({factor} x its inputs + "
                             f"{margin_gib} GiB margin) but {where} has {free / GIB:.2f} GiB free; free space or "
                             "set work_dir/out_dir elsewhere (conf/process.yaml, disk.*)")
    return need


def _move_into_place(staged: list[Path], final: list[Path]) -> None:
    for source, target in zip(staged, final):
        if not source.exists():
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(source, target)


class EventChain:
    """Runs (or resumes) one event; ``cfg`` is conf/process.yaml resolved to plain containers."""

    def __init__(self, cfg: Mapping[str, Any], runner: Runner | None = None):
        self.cfg = cfg
        self.event = str(cfg["event"])
        self.paths = EventPaths(Path(cfg["out_dir"]) / self.event, Path(cfg["scene_dir"]) / f"{self.event}.nc")
        self.params = graphs.resolve_parameters(cfg["graph"], cfg["multilook"])  # refused before anything runs
        self.runner = runner
        self.manifest = Manifest(self.paths.manifest, self.event)

    def _runner(self) -> Runner:
        if self.runner is None:
            snap = self.cfg["snap"]
            self.runner = make_runner(str(self.cfg["runner"]), snap.get("gpt"), snap.get("threads"),
                                      snap.get("cache"), snap.get("timeout_s"))
        return self.runner

    def snap_version(self) -> tuple[int, int, int]:
        """The installed SNAP's version: ``snap_version`` from config, else what the runner reports."""
        configured = self.cfg.get("snap_version")
        if configured not in (None, ""):
            text, source = str(configured), f"snap_version={configured!r}"
        else:
            runner = self._runner()
            text = runner.snap_version()
            if text is None:
                raise SnapError(f"cannot tell the SNAP version ({runner.name}: {runner.version()}); set "
                                "snap_version=<the installed SNAP's version, e.g. 13.0.4> (conf/process.yaml); "
                                f"supported: {SUPPORTED_VERSIONS}")
            source = f"{runner.name}"
        try:
            version = parse_version(text)
        except ValueError:
            raise GraphError(f"{source}: not a SNAP version like 13.0.4") from None
        check_supported(version)
        if version > NEWEST_CHECKED:
            log.warning("SNAP %s is newer than the versions the operator table was checked against (%s); "
                        "parameters are written as for the newest", text, SUPPORTED_VERSIONS)
        log.info("SNAP version %s (from %s)", ".".join(map(str, version)), source)
        return version

    def run(self, pre: Path, post: Path) -> Path:
        for name, path in (("pre", pre), ("post", post)):
            if not Path(path).exists():
                raise FileNotFoundError(f"{name}={path}: no such SLC product (a Sentinel-1 IW SLC .zip or .SAFE)")
        # Only what the installed SNAP understands goes into the graphs; the rest is refused before any step.
        version = self.snap_version()
        self.params = graphs.parameters_for_version(self.params, version)
        self.manifest.record_inputs({"pre": Path(pre), "post": Path(post)})
        self.manifest.data["versions"]["snap_release"] = ".".join(map(str, version))
        self.manifest.data["parameters"] = {"graph": self.params, "multilook": self.cfg["multilook"],
                                            "runner": self.cfg["runner"], "disk": self.cfg["disk"]}
        self.manifest.save()
        p = self.paths
        wrapped_parts = dimap_parts(p.wrapped)
        self._step("interferogram", [Path(pre), Path(post)], self._step_params("interferogram"), wrapped_parts,
                   lambda stage: self._graph(graphs.interferogram_graph(self.params, pre, post,
                                                                        stage / p.wrapped.name)),
                   staged=lambda stage: dimap_parts(stage / p.wrapped.name))
        self._step("snaphu_export", wrapped_parts, self._step_params("snaphu_export"), [p.snaphu],
                   lambda stage: self._graph(graphs.snaphu_export_graph(self.params, p.wrapped, stage / "snaphu")),
                   staged=lambda stage: [stage / "snaphu"], record=self._export_files)
        export_files = [Path(f) for f in self.manifest.outputs("snaphu_export")]
        job = read_conf(find_export_folder(p.snaphu))
        self._step("snaphu", export_files, {"snaphu": self._snaphu_version()}, [job.out_file],
                   lambda stage: unwrap_export_folder(p.snaphu), staged=None)
        unwrapped_hdr = job.out_file.with_suffix(".hdr")
        self._step("geocode", wrapped_parts + [job.out_file, unwrapped_hdr], self._step_params("geocode"), [p.export],
                   lambda stage: self._graph(graphs.geocode_graph(self.params, p.wrapped, unwrapped_hdr,
                                                                  stage / p.export.name)),
                   staged=lambda stage: [stage / p.export.name])
        attrs = {"event_id": self.event, "source": "snap", **(self.cfg.get("scene_attrs") or {}),
                 "history": f"SNAP chain (runner {self.cfg['runner']}: {self.manifest.data['versions'].get('snap')}; "
                            f"{self.manifest.data['versions'].get('snaphu')}) via insarslide data_prep.process"}
        self._step("scene", [p.export], attrs, [p.scene], lambda stage: self._convert(attrs), staged=None)
        return p.scene

    # -- helpers --------------------------------------------------------------------------------------------
    def _step_params(self, step: str) -> dict[str, Any]:
        return {alias: self.params[alias] for alias in STEP_OPERATORS[step]}

    def _graph(self, graph: graphs.Graph) -> None:
        runner = self._runner()
        versions = self.manifest.data["versions"]
        if "snap" not in versions:
            versions["snap"] = f"{runner.name}: {runner.version()}"
            self.manifest.save()
        runner.run(graph, self.paths.work)

    def _convert(self, attrs: dict[str, Any]) -> None:
        """Export -> scene; what the reader assumed or converted is kept in the manifest."""
        _, notes = export_to_scene(self.paths.export, self.paths.scene, attrs)
        self.manifest.data["steps"]["scene"]["notes"] = notes

    def _snaphu_version(self) -> str:
        from importlib.metadata import version

        versions = self.manifest.data["versions"]
        versions.setdefault("snaphu", f"snaphu-py {version('snaphu')}")
        return versions["snaphu"]

    def _export_files(self, outputs: list[Path]) -> list[Path]:
        """SnaphuExport's outputs are its files (the folder later also receives SNAPHU's result)."""
        return sorted(f for f in outputs[0].rglob("*") if f.is_file())

    def _step(self, step: str, inputs: list[Path], parameters: Any, outputs: list[Path],
              action: Callable[[Path], Any], staged: Callable[[Path], list[Path]] | None,
              record: Callable[[list[Path]], list[Path]] | None = None) -> None:
        existing = [i for i in inputs if Path(i).exists()]
        if len(existing) != len(inputs):
            missing = [str(i) for i in inputs if not Path(i).exists()]
            raise FileNotFoundError(f"step '{step}' of event {self.event}: input(s) {missing} missing")
        fingerprint = self.manifest.fingerprint(step, parameters, inputs)
        if self.manifest.is_done(step, fingerprint):
            log.info("%s: step %s up to date, skipped", self.event, step)
            return
        disk = self.cfg["disk"]
        check_disk(step, inputs, float(disk["factors"][step]), float(disk["margin_gib"]), self.paths.work)
        stage = self.paths.staging(step)
        if stage.exists():
            shutil.rmtree(stage)  # leftovers of an interrupted run
        stage.mkdir(parents=True)
        self.manifest.start(step, fingerprint)
        start = time.perf_counter()
        log.info("%s: step %s", self.event, step)
        try:
            action(stage)
            if staged is not None:
                _move_into_place(staged(stage), outputs)
        except BaseException as exc:
            self.manifest.fail(step, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.manifest.finish(step, record(outputs) if record else outputs, time.perf_counter() - start)


def run_event(cfg: Mapping[str, Any], pre: Path, post: Path, runner: Runner | None = None) -> Path:
    """Process one event (resuming finished steps); return the scene file."""
    return EventChain(cfg, runner).run(Path(pre), Path(post))
