"""Two ways to run one :class:`~data_prep.snap.graph.Graph`: SNAP's ``gpt`` command, or ``esa_snappy`` in process.

Both report a failure the same way (:class:`SnapError`, with what to do) and
both are checked after the run: every file or folder the graph writes must exist.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

from data_prep.snap.graph import Graph
from insarslide.atomic import temporary_sibling

LOG_TAIL_LINES = 30

INSTALL_HINT = ("install SNAP (https://step.esa.int/main/download/snap-download/) with the Sentinel-1 (microwave) "
                "toolbox; or process without SNAP: python -m data_prep.process backend=numpy pair=PATH")


class SnapError(RuntimeError):
    """SNAP is missing, or a graph failed or did not write its outputs."""


class Runner(Protocol):
    name: str

    def run(self, graph: Graph, work_dir: Path) -> None: ...

    def version(self) -> str: ...

    def snap_version(self) -> str | None: ...


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(text[-lines:]) or "(empty log)"


def _check_outputs(graph: Graph, how: str, log: Path | None = None) -> None:
    missing = [str(p) for p in graph.outputs() if not p.exists()]
    if missing:
        tail = f"; last lines of {log}:\n{_tail(log)}" if log else ""
        raise SnapError(f"{how} finished graph '{graph.name}' but did not write {missing}{tail}")


def find_gpt(configured: str | None) -> str:
    """``gpt`` from config, else on PATH, else ``$SNAP_HOME/bin/gpt``; a clear error otherwise."""
    candidates = [configured] if configured else [shutil.which("gpt")]
    if not configured and os.environ.get("SNAP_HOME"):
        candidates.append(str(Path(os.environ["SNAP_HOME"]) / "bin" / "gpt"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    where = f"gpt={configured} is not an executable file" if configured else "no 'gpt' on PATH nor in $SNAP_HOME/bin"
    raise SnapError(f"SNAP's gpt not found: {where}. Put <snap>/bin on PATH, set SNAP_HOME, or set gpt=/path/to/gpt "
                    f"in conf/process.yaml; or {INSTALL_HINT}")


class GptRunner:
    """Writes the graph XML into the work folder and runs ``gpt graph.xml -q <threads> -c <cache>``, keeping its log."""

    name = "gpt"

    def __init__(self, gpt: str | None = None, threads: int | None = None, cache: str | None = None,
                 timeout_s: float | None = None):
        self.gpt = find_gpt(gpt)
        self.threads, self.cache, self.timeout_s = threads, cache, timeout_s
        self._diag: str | None = None  # gpt --diag's version line, asked once (gpt starts a JVM)

    def command(self, graph_file: Path) -> list[str]:
        command = [self.gpt, str(graph_file)]
        if self.threads:
            command += ["-q", str(self.threads)]
        if self.cache:
            command += ["-c", str(self.cache)]
        return command

    def run(self, graph: Graph, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        graph_file = work_dir / f"{graph.name}.xml"
        tmp = temporary_sibling(graph_file)
        tmp.write_text(graph.to_xml())
        os.replace(tmp, graph_file)
        log = work_dir / f"{graph.name}.gpt.log"
        with open(log, "w") as handle:
            try:
                done = subprocess.run(self.command(graph_file), stdout=handle, stderr=subprocess.STDOUT,
                                      timeout=self.timeout_s, cwd=work_dir)
            except subprocess.TimeoutExpired as exc:
                raise SnapError(f"gpt ran past {self.timeout_s} s on {graph_file}; last lines of {log}:\n"
                                f"{_tail(log)}") from exc
        if done.returncode != 0:
            raise SnapError(f"gpt failed (exit {done.returncode}) on {graph_file}; last lines of {log}:\n{_tail(log)}")
        _check_outputs(graph, "gpt", log)

    def version(self) -> str:
        """SNAP's version as ``gpt --diag`` prints it (first line naming a version)."""
        if self._diag is None:
            self._diag = self._ask_version()
        return self._diag

    def _ask_version(self) -> str:
        try:
            done = subprocess.run([self.gpt, "--diag"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({type(exc).__name__})"
        for line in done.stdout.splitlines():
            if re.search(r"version", line, re.IGNORECASE) and re.search(r"\d+\.\d+", line):
                return line.strip()
        return "unknown (gpt --diag printed no version)"

    def snap_version(self) -> str | None:
        """SNAP's release (``SNAP Release version 13.0.4`` in ``gpt --diag``); None when gpt does not say."""
        match = re.search(r"SNAP Release version\s+(\d+\.\d+(?:\.\d+)?)", self.version(), re.IGNORECASE)
        return match.group(1) if match else None


def import_snappy() -> Any:
    """``esa_snappy``, imported only when the snappy runner is used."""
    try:
        return importlib.import_module("esa_snappy")
    except Exception as exc:  # without SNAP: ModuleNotFoundError: No module named 'jpyutil', or a Java error
        raise SnapError(
            f"esa_snappy cannot be imported ({type(exc).__name__}: {exc}). It needs a local SNAP: "
            "pip install 'insarslide[snap]' (esa-snappy), then point it at SNAP: set SNAP_HOME=/path/to/snap (or "
            "run <snap>/bin/snappy-conf <python>, or write snap_home in esa_snappy's ini file); or use runner=gpt; "
            f"or {INSTALL_HINT}") from exc


class SnappyRunner:
    """Walks the graph node by node: ``ProductIO.readProduct``, ``GPF.createProduct``, ``ProductIO.writeProduct``."""

    name = "snappy"

    def __init__(self) -> None:
        self.snappy = import_snappy()

    def _parameters(self, values: dict[str, Any]) -> Any:
        parameters = self.snappy.HashMap()
        for name, value in values.items():
            parameters.put(name, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
        return parameters

    def run(self, graph: Graph, work_dir: Path) -> None:
        snappy = self.snappy
        products: dict[str, Any] = {}
        for node in graph.nodes:
            params = dict(node.parameters)
            sources = [products[s] for s in node.sources]
            if node.operator == "Read":
                if params.get("formatName"):
                    reader = snappy.ProductIO.getProductReader(params["formatName"])
                    products[node.id] = reader.readProductNodes(params["file"], None)
                else:
                    products[node.id] = snappy.ProductIO.readProduct(params["file"])
            elif node.operator == "Write":
                snappy.ProductIO.writeProduct(sources[0], params["file"], params["formatName"])
            else:
                source = sources[0] if len(sources) == 1 else sources
                products[node.id] = snappy.GPF.createProduct(node.operator, self._parameters(params), source)
                if node.operator == "SnaphuExport":  # a writer operator: its product is written as 'Snaphu'
                    snappy.ProductIO.writeProduct(products[node.id], params["targetFolder"], "Snaphu")
        for product in products.values():
            if hasattr(product, "dispose"):
                product.dispose()
        _check_outputs(graph, "esa_snappy")

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"esa-snappy {version('esa-snappy')}"
        except PackageNotFoundError:
            return "esa_snappy (version unknown)"

    def snap_version(self) -> str | None:
        """SNAP's release as the engine reports it (``SystemUtils.getReleaseVersion``); None when it cannot."""
        try:
            return str(self.snappy.jpy.get_type("org.esa.snap.core.util.SystemUtils").getReleaseVersion())
        except Exception:  # an older esa_snappy, or a stub without jpy
            return None


def make_runner(runner: str, gpt: str | None = None, threads: int | None = None, cache: str | None = None,
                timeout_s: float | None = None) -> Runner:
    if runner == "gpt":
        return GptRunner(gpt, threads, cache, timeout_s)
    if runner == "snappy":
        return SnappyRunner()
    raise ValueError(f"runner={runner!r}: choose gpt or snappy")
