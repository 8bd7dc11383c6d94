"""Tiny files shaped as SNAP writes them (docs/processing.md, "SNAP facts the code relies on").

``snap14_export`` writes what SNAP 14's ``Write`` (NetCDF4-CF) makes of the
thesis chain after Terrain-Correction with WGS84: dimensions ``lat``/``lon``
(first row north), no CRS variable, SNAP's band names with the tag
``_IW2_VV_03Jun2022_15Jun2022`` and Terrain-Correction's ``_VV`` suffix,
SNAP's unit strings, ``_FillValue = 0`` on every band and 0 in the border
pixels outside the image. The values are closed-form fields so tests know the
canonical scene it must read as (:func:`expected_scene`).

``snaphu_export_folder`` writes SnaphuExport's folder layout (ENVI ``.img`` +
``.hdr``, big-endian float32, ``snaphu.conf`` with the command on line 7).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from data.scenes import position_bands

from insarslide.contract.spec import S1_WAVELENGTH_M

TAG = "_IW2_VV_03Jun2022_15Jun2022"
DATES = "_03Jun2022_15Jun2022"
BORDER = 1  # pixels of no-data (0) around the image, as Terrain-Correction leaves outside the swath


def truth_fields(h: int, w: int) -> dict[str, np.ndarray]:
    """Canonical bands (float64) of a smooth synthetic product, NaN in the border."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    unwrapped = 0.713 + 0.9 * rows - 0.4 * cols  # rad; never exactly 0 (SNAP cannot tell a 0 from its fill)
    fields = {
        "phase": (unwrapped + np.pi) % (2 * np.pi) - np.pi,
        "coherence": 0.2 + 0.6 * (rows + cols) / (h + w),
        "intensity": 0.05 + 0.01 * (rows + 1) * (cols + 1),  # linear power
        "elevation": 100.0 + 10.0 * rows + 3.0 * cols,
        "displacement": -S1_WAVELENGTH_M / (4 * np.pi) * unwrapped,
        "unwrapped_phase": unwrapped,
        "local_incidence_angle": 25.0 + 0.5 * rows + 0.25 * cols,
    }
    border = np.zeros((h, w), dtype=bool)
    border[:BORDER], border[-BORDER:], border[:, :BORDER], border[:, -BORDER:] = True, True, True, True
    for values in fields.values():
        values[border] = np.nan
    return fields


def snap14_export(path: Path, h: int = 12, w: int = 10, *, displacement_sign: float = -1.0,
                  displacement: np.ndarray | None = None, attrs: dict | None = None) -> Path:
    """Write a SNAP 14 NetCDF4-CF export; ``displacement_sign=+1`` is the pre-2016 convention."""
    shown = truth_fields(h, w)
    shown["displacement"] = displacement_sign * S1_WAVELENGTH_M / (4 * np.pi) * shown["unwrapped_phase"]
    if displacement is not None:
        shown["displacement"] = displacement
    return write_export(path, shown, attrs)


def write_export(path: Path, shown: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Canonical-named fields (NaN = no-data, intensity linear) written with SNAP's names, units and fill 0."""
    import xarray as xr  # imported here: the fake gpt loads this module on every call

    h, w = shown["phase"].shape
    i_part = np.sqrt(shown["intensity"]) * np.cos(shown["phase"])
    q_part = np.sqrt(shown["intensity"]) * np.sin(shown["phase"])
    variables = {  # SNAP band name: (values, unit string, description)
        f"i_ifg{TAG}": (i_part, "real", ""),
        f"q_ifg{TAG}": (q_part, "imaginary", ""),
        f"Phase_ifg{TAG}": (shown["phase"], "phase", "Phase from complex data"),
        f"coh{TAG}": (shown["coherence"], "coherence", ""),
        f"Intensity_ifg{TAG}_db": (10 * np.log10(shown["intensity"]), "intensity", "Intensity in dB from complex data"),
        f"Unw_Phase_ifg{DATES}_VV": (shown["unwrapped_phase"], "abs_phase", ""),
        "displacement_VV": (shown["displacement"], "meters", "displacement"),
        "elevation_VV": (shown["elevation"] + 0.5, "meters", "Interferogram's DEM, resampled"),
        "elevation": (shown["elevation"], "meters", ""),
        "localIncidenceAngle": (shown["local_incidence_angle"], "degree", ""),
        "projectedLocalIncidenceAngle": (shown["local_incidence_angle"] - 1, "degree", ""),
    }
    lat = -8.40 - (np.arange(h) + 0.5) * 0.00027  # first row north
    lon = 116.10 + (np.arange(w) + 0.5) * 0.00027
    ds = xr.Dataset(coords={"lat": ("lat", lat, {"units": "degrees_north"}),
                            "lon": ("lon", lon, {"units": "degrees_east"})})
    for name, (values, unit, description) in variables.items():
        stored = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
        ds[name] = (("lat", "lon"), stored, {"units": unit, "long_name": description, "coordinates": "lat lon"})
        ds[name].encoding["_FillValue"] = np.float32(0.0)
    ds.attrs.update({"Conventions": "CF-1.4", "TileSize": f"{h}:{w}", "title": "ifg_ml_flt_unw_disp_TC",
                     "start_date": "03-JUN-2022 10:21:33.000000", "stop_date": "15-JUN-2022 10:21:36.000000",
                     **(attrs or {})})
    ds.to_netcdf(path, engine="h5netcdf")
    return Path(path)


def expected_scene(h: int, w: int) -> dict[str, np.ndarray]:
    """What :func:`snap14_export` must read as (float32, NaN = no-data)."""
    return {k: v.astype(np.float32) for k, v in truth_fields(h, w).items()}


def write_envi(path_img: Path, values: np.ndarray, description: str = "") -> None:
    """Float32 ENVI image as SNAP's ENVI writer makes it (big-endian, ``byte order = 1``)."""
    np.asarray(values, dtype=">f4").tofile(path_img)
    write_envi_header(path_img.with_suffix(".hdr"), values.shape, description)


def write_envi_header(path_hdr: Path, shape: tuple[int, int], description: str = "") -> None:
    path_hdr.write_text(
        "ENVI\n"
        f"description = {{{description}}}\n"
        f"samples = {shape[1]}\nlines = {shape[0]}\nbands = 1\nheader offset = 0\n"
        "file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 1\n"
        "band names = { " + description + " }\n"
    )


def snaphu_conf(phase_img: str, coh_img: str, out_img: str, width: int, *, cost: str = "DEFO", init: str = "MST",
                tiles: tuple[int, int] = (1, 1), overlap: tuple[int, int] = (0, 0), nproc: int = 1,
                tile_cost_thresh: int = 500, extra: str = "") -> str:
    """``snaphu.conf`` as SnaphuExport writes it: the command is the 7th line."""
    return (
        "# CONFIG FOR SNAPHU\n"
        "# ---------------------------------------------------------------- \n"
        "# Created by SNAP software on: 10:00:00 01/06/2026\n"
        "#\n"
        "# Command to call snaphu:\n"
        "# \n"
        f"#       snaphu -f snaphu.conf {phase_img} {width}\n"
        "\n"
        f"STATCOSTMODE \t {cost} \nINITMETHOD  \t {init} \nVERBOSE \t TRUE \n\n"
        f"CORRFILE \t\t{coh_img}\n\nOUTFILE \t\t{out_img}\nLOGFILE \t\tsnaphu.log\n\n"
        "INFILEFORMAT \tFLOAT_DATA\nCORRFILEFORMAT \tFLOAT_DATA\nOUTFILEFORMAT \tFLOAT_DATA\n\n"
        "TRANSMITMODE \tREPEATPASS\nLAMBDA \t\t\t0.0554658\nDR \t\t\t\t2.3295621\nDA \t\t\t\t13.9\n"
        "NCORRLOOKS \t\t23.8\n\n"
        f"NTILEROW           {tiles[0]}\nNTILECOL           {tiles[1]}\n\n"
        f"ROWOVRLP           {overlap[0]}\nCOLOVRLP           {overlap[1]}\n\n"
        f"NPROC              {nproc}\n\nTILECOSTTHRESH   {tile_cost_thresh}\n\n{extra}"
        "# End of snaphu configuration file"
    )


def snaphu_export_folder(folder: Path, phase: np.ndarray, coherence: np.ndarray, **conf) -> Path:
    """SnaphuExport's ``<targetFolder>/<productName>/`` with wrapped phase, coherence, UnwPhase header and conf."""
    folder.mkdir(parents=True, exist_ok=True)
    phase_img, coh_img, unw_img = f"Phase_ifg{TAG}.snaphu.img", f"coh{TAG}.snaphu.img", f"UnwPhase_ifg{TAG}.snaphu.img"
    write_envi(folder / phase_img, phase, f"Phase_ifg{TAG}")
    write_envi(folder / coh_img, coherence, f"coh{TAG}")
    write_envi_header((folder / unw_img).with_suffix(".hdr"), phase.shape, f"UnwPhase_ifg{TAG}")
    (folder / "snaphu.conf").write_text(snaphu_conf(phase_img, coh_img, unw_img, phase.shape[1], **conf))
    return folder


def snap_export(path, h=5, w=6, extra=None):
    """A SNAP NetCDF export of an older layout (bands on ``lat``/``lon``, SNAP's tagged names and units, no
    fill values): position-coded bands (:func:`data.scenes.position_bands`), ``extra`` variables added."""
    b = position_bands(h, w)
    tag = "_IW2_VV_03Jun2022_15Jun2022"
    names = {"phase": f"Phase_ifg{tag}", "coherence": f"coh{tag}", "intensity": f"Intensity_ifg{tag}",
             "elevation": "elevation", "displacement": "displacement", "unwrapped_phase": f"Unw_Phase_ifg{tag}",
             "local_incidence_angle": "localIncidenceAngle"}
    units = {"phase": "radian", "coherence": "", "intensity": "", "elevation": "meters", "displacement": "m",
             "unwrapped_phase": "radian", "local_incidence_angle": "deg"}
    ds = xr.Dataset({names[k]: (("lat", "lon"), v, {"units": units[k]}) for k, v in b.items()},
                    coords={"lat": 45.0 - np.arange(h) * 0.0003, "lon": 10.0 + np.arange(w) * 0.0003})
    for k, v in (extra or {}).items():
        ds[k] = (("lat", "lon"), v)
    ds.attrs.update(event_id="lombok_2018")
    ds.to_netcdf(path, engine="h5netcdf")
    return path
