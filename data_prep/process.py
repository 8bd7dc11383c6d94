"""A Sentinel-1 pair -> one scene file (docs/data_format.md), with SNAP + SNAPHU or with the NumPy chain.

    python -m data_prep.process event=lombok_2018 pre=PRE.zip post=POST.zip out_dir=data/processed
    python -m data_prep.process -m event=lombok_2018,iburi_2018 slc_dir=data/slc out_dir=data/processed
    python -m data_prep.process backend=numpy pair=PAIR.nc out_dir=data/processed

``backend=snap`` runs :mod:`data_prep.snap.chain` (resumable, one manifest per
event). ``backend=numpy`` runs :mod:`data_prep.dinsar` (the simulator's chain)
on a co-registered complex pair; the pair format is described in
docs/processing.md and read here by :func:`open_pair`.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from data_prep import dinsar
from data_prep.events import fill_scene_attrs
from insarslide.config import config_dir
from insarslide.contract.scene_writer import write_scene
from insarslide.contract.spec import S1_WAVELENGTH_M

log = logging.getLogger(__name__)

PAIR_ATTRS = ("region", "pre_date", "post_date", "event_start", "event_end", "platform", "orbit_direction",
              "relative_orbit")
SLC_NAME = re.compile(r"^S1[A-D]_IW_SLC__\w*?_(\d{8})T\d{6}_.*\.(zip|SAFE)$")


class PairError(ValueError):
    """A pair file or SLC folder is unusable; the message names the file and the variable."""


def find_pair(slc_dir: str | Path, event: str) -> tuple[Path, Path]:
    """The event's two Sentinel-1 IW SLCs in ``slc_dir/<event>/``, pre-event (earlier acquisition) first."""
    folder = Path(slc_dir) / event
    products = sorted((m.group(1), p) for p in (folder.iterdir() if folder.is_dir() else [])
                      if (m := SLC_NAME.match(p.name)))
    if len(products) != 2:
        raise PairError(f"{folder}: expected two Sentinel-1 IW SLC products (S1?_IW_SLC__*.zip or .SAFE), found "
                        f"{[p.name for _, p in products] or 'none'}; or give pre= and post=")
    (pre_date, pre), (post_date, post) = products
    if pre_date == post_date:
        raise PairError(f"{folder}: both products were acquired on {pre_date}")
    return pre, post


# --------------------------------------------------------------------------- NumPy backend: pair files

@dataclass
class PairSource:
    """A co-registered complex pair on one grid, read in strips of rows."""

    path: Path
    shape: tuple[int, int]
    read: Any  # (row0, row1) -> dict with pre, post (complex64), elevation, local_incidence_angle, valid (bool)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    crs_wkt: str | None = None
    attrs: dict = field(default_factory=dict)
    close: Any = lambda: None


def _netcdf_pair(path: Path) -> PairSource:
    import xarray as xr

    ds = xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False, cache=False)
    complex_vars = {}
    for name in ("pre", "post"):
        if f"{name}_real" in ds and f"{name}_imag" in ds:
            complex_vars[name] = (f"{name}_real", f"{name}_imag")
        elif name in ds and np.iscomplexobj(ds[name].values[:1, :1]):
            complex_vars[name] = (name,)
        else:
            ds.close()
            raise PairError(f"{path}: variables '{name}_real' and '{name}_imag' (float32 on y, x) missing")
    for name in ("elevation", "local_incidence_angle"):
        if name not in ds:
            ds.close()
            units = "m" if name == "elevation" else "degree"
            raise PairError(f"{path}: variable '{name}' missing (on the SLC grid, in {units})")
    shape = (int(ds.sizes["y"]), int(ds.sizes["x"])) if "y" in ds.sizes and "x" in ds.sizes else None
    if shape is None:
        ds.close()
        raise PairError(f"{path}: dimensions 'y' and 'x' missing (found {list(ds.sizes)})")

    def read(row0: int, row1: int) -> dict[str, np.ndarray]:
        rows = dict(y=slice(row0, row1))
        out = {}
        for name, parts in complex_vars.items():
            if len(parts) == 2:
                out[name] = (ds[parts[0]][rows].values + 1j * ds[parts[1]][rows].values).astype(np.complex64)
            else:
                out[name] = ds[parts[0]][rows].values.astype(np.complex64)
        for name in ("elevation", "local_incidence_angle"):
            out[name] = ds[name][rows].values.astype(np.float32)
        out["valid"] = ds["valid"][rows].values == 1 if "valid" in ds else np.ones((row1 - row0, shape[1]), bool)
        return out

    crs = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds else None
    return PairSource(path, shape, read, ds["x"].values if "x" in ds.coords else None,
                      ds["y"].values if "y" in ds.coords else None, crs, dict(ds.attrs), ds.close)


def _geotiff_pair(path: Path) -> PairSource:
    import rasterio

    companions = {name: path.with_name(f"{path.stem}_{name}.tif") for name in ("elevation", "local_incidence_angle")}
    for name, companion in companions.items():
        if not companion.is_file():
            raise PairError(f"{path}: companion file {companion.name} ({name} on the same grid) missing")
    slc = rasterio.open(path)
    complex_bands = all(d == "complex_int16" or np.dtype(d).kind == "c" for d in slc.dtypes)
    if slc.count != 2 or not complex_bands:
        slc.close()
        raise PairError(f"{path}: expected 2 complex bands (1 = pre-event, 2 = post-event), found {slc.count} "
                        f"band(s) of {slc.dtypes[0]}")
    others = {name: rasterio.open(p) for name, p in companions.items()}
    for name, src in others.items():
        if (src.height, src.width) != (slc.height, slc.width):
            raise PairError(f"{companions[name]}: grid {src.height} x {src.width} differs from {path.name}")

    def read(row0: int, row1: int) -> dict[str, np.ndarray]:
        from rasterio.windows import Window

        window = Window(0, row0, slc.width, row1 - row0)
        pre, post = (slc.read(b, window=window).astype(np.complex64) for b in (1, 2))
        out = {"pre": pre, "post": post}
        for name, src in others.items():
            out[name] = src.read(1, window=window).astype(np.float32)
        out["valid"] = slc.read_masks(1, window=window) > 0
        return out

    t = slc.transform
    x = t.c + (np.arange(slc.width) + 0.5) * t.a if slc.crs else None
    y = t.f + (np.arange(slc.height) + 0.5) * t.e if slc.crs else None

    def close() -> None:
        slc.close()
        for src in others.values():
            src.close()

    return PairSource(path, (slc.height, slc.width), read, x, y, slc.crs.to_wkt() if slc.crs else None,
                      dict(slc.tags()), close)


def open_pair(path: str | Path) -> PairSource:
    """A pair file: NetCDF-4 (``.nc``) or a two-band complex GeoTIFF (``.tif``) with companions."""
    path = Path(path)
    if not path.is_file():
        raise PairError(f"pair={path}: no such file")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _geotiff_pair(path)
    return _netcdf_pair(path)


def _strips(height: int, rows: int, looks_az: int) -> Iterator[tuple[int, int]]:
    rows = max(looks_az, rows // looks_az * looks_az)
    usable = height // looks_az * looks_az
    for row0 in range(0, usable, rows):
        yield row0, min(row0 + rows, usable)


def _block_centres(coords: np.ndarray | None, looks: int, n: int) -> np.ndarray:
    """Coordinates of multilooked pixels: the mean of their block (SLC pixel indices without coordinates)."""
    values = np.arange(n * looks, dtype=np.float64) if coords is None else np.asarray(coords, np.float64)[:n * looks]
    return values.reshape(n, looks).mean(axis=1)


def process_numpy_pair(pair_path: str | Path, scene_path: str | Path, proc: Mapping[str, Any],
                       attrs: Mapping[str, object]) -> Path:
    """Run :func:`data_prep.dinsar.process_products` on a pair file and write the scene (multilooked grid)."""
    pair = open_pair(pair_path)
    try:
        wavelength = float(pair.attrs.get("wavelength_m", S1_WAVELENGTH_M))
        merged = fill_scene_attrs({**{k: v for k, v in pair.attrs.items() if k in PAIR_ATTRS},
                                   "wavelength_m": wavelength, "source": "numpy-dinsar",
                                   **{k: v for k, v in attrs.items() if str(v).strip()}})  # gaps from the catalogue
        missing = [name for name in ("region", "pre_date", "post_date") if not str(merged.get(name, "")).strip()]
        if missing:  # refused before the work, not after
            raise PairError(f"{pair.path}: scene attribute(s) {missing} unknown: give event=<catalogue event id>, "
                            "global attributes in the pair file, or e.g. +scene_attrs.region='Lombok, Indonesia'")
        looks_az, looks_rg = int(proc["looks_az"]), int(proc["looks_rg"])
        h, w = pair.shape[0] // looks_az, pair.shape[1] // looks_rg
        if h < 1 or w < 1:
            raise PairError(f"{pair.path}: grid {pair.shape} smaller than one multilook block {looks_az} x {looks_rg}")
        ifg = np.empty((h, w), np.complex64)
        p_pre, p_post = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
        elevation, incidence = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
        valid = np.empty((h, w), bool)
        for row0, row1 in _strips(pair.shape[0], int(proc["strip_rows"]), looks_az):
            part = pair.read(row0, row1)
            out = slice(row0 // looks_az, row1 // looks_az)
            ifg[out], p_pre[out], p_post[out] = dinsar.multilook_products(part["pre"], part["post"], looks_az, looks_rg)
            elevation[out] = dinsar.multilook(part["elevation"], looks_az, looks_rg)
            incidence[out] = dinsar.multilook(part["local_incidence_angle"], looks_az, looks_rg)
            valid[out] = dinsar.multilook(part["valid"].astype(np.float32), looks_az, looks_rg) == 1.0
        # process_pair's second half: the strips above did its multilooking without holding the SLCs
        bands = dinsar.process_products(ifg, p_pre, p_post, proc, ~valid, wavelength)
        bands["elevation"], bands["local_incidence_angle"] = elevation, incidence
        valid &= np.all([np.isfinite(b) for b in bands.values()], axis=0)
        for name in bands:
            bands[name] = np.where(valid, bands[name], np.nan).astype(np.float32)
        x = _block_centres(pair.x, looks_rg, w)
        y = _block_centres(pair.y, looks_az, h)
        spacing = (float(x[1] - x[0]) if w > 1 else float(looks_rg), float(y[1] - y[0]) if h > 1 else float(looks_az))
        return write_scene(scene_path, bands, x=x, y=y, crs_wkt=pair.crs_wkt, attrs=merged,
                           valid=valid.astype(np.uint8), spacing=spacing)
    finally:
        pair.close()


# --------------------------------------------------------------------------- entry point

def run(cfg: Mapping[str, Any]) -> Path:
    """Process what ``cfg`` (conf/process.yaml as plain containers) names; return the scene file."""
    backend = str(cfg["backend"])
    if backend == "numpy":
        if not cfg.get("pair"):
            raise PairError("backend=numpy needs pair=PATH (a co-registered SLC pair, docs/processing.md)")
        pair = Path(cfg["pair"])
        event = str(cfg.get("event") or re.sub(r"[^a-z0-9_]+", "_", pair.stem.lower()).strip("_"))
        attrs = {"event_id": event, **(cfg.get("scene_attrs") or {})}
        scene = Path(cfg["scene_dir"]) / f"{event}.nc"
        return process_numpy_pair(pair, scene, cfg["numpy"], attrs)
    if backend != "snap":
        raise ValueError(f"backend={backend!r}: choose snap or numpy")
    from data_prep.snap.chain import run_event

    if not cfg.get("event"):
        raise PairError("backend=snap needs event=<event id>")
    pre, post = cfg.get("pre"), cfg.get("post")
    if not (pre and post):
        if not cfg.get("slc_dir"):
            raise PairError("give pre=PATH post=PATH, or slc_dir=DIR with DIR/<event>/ holding the two SLCs")
        pre, post = find_pair(cfg["slc_dir"], str(cfg["event"]))
    return run_event(cfg, Path(pre), Path(post))


def main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="process")
    def _run(cfg: DictConfig) -> None:
        plain = OmegaConf.to_container(cfg, resolve=True)
        try:
            scene = run(plain)
        except (ValueError, OSError, RuntimeError) as exc:  # our errors explain themselves
            print(f"data_prep.process: {type(exc).__name__}: {exc}", file=sys.stderr)
            sys.exit(1)
        print(f"scene written: {scene}")

    _run()


if __name__ == "__main__":
    main()
