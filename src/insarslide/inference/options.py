"""The options of a prediction run: how scenes are cut into windows (:class:`WindowOptions`) and which maps are
written (:class:`MapOptions`), each checked when built, with an error naming the setting and what would work.

``conf/predict.yaml`` holds their defaults; :func:`insarslide.inference.predict.predict_scenes` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from insarslide.models.module import OUTPUT_STRIDE

BLENDS = ("hann", "gaussian", "uniform")
PADDINGS = ("reflect", "zero")
BACKGROUNDS = ("elevation", "intensity")
THESIS_TILE_SIZE = 256  # windows for a checkpoint that does not record its training patch size



@dataclass(frozen=True)
class WindowOptions:
    tile_size: int = THESIS_TILE_SIZE
    overlap: float = 0.5
    blend: str = "hann"
    gaussian_sigma: float = 0.125  # fraction of the tile (blend=gaussian)
    padding: str = "reflect"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.tile_size < OUTPUT_STRIDE or self.tile_size % OUTPUT_STRIDE:
            raise ValueError(f"window.tile_size={self.tile_size}: must be a positive multiple of {OUTPUT_STRIDE} "
                             f"(e.g. {max(1, round(self.tile_size / OUTPUT_STRIDE)) * OUTPUT_STRIDE})")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"window.overlap={self.overlap}: must be in [0, 1) (a fraction of the tile)")
        if self.blend not in BLENDS:
            raise ValueError(f"window.blend={self.blend!r}: choose one of {list(BLENDS)}")
        if self.padding not in PADDINGS:
            raise ValueError(f"window.padding={self.padding!r}: choose one of {list(PADDINGS)}")
        if self.batch_size < 1 or self.gaussian_sigma <= 0:
            raise ValueError("window.batch_size must be >= 1 and window.gaussian_sigma > 0")

    @property
    def stride(self) -> int:
        return max(1, round(self.tile_size * (1 - self.overlap)))


@dataclass(frozen=True)
class MapOptions:
    min_area_px: int = 0
    connectivity: int = 8  # as the evaluation's objects (insarslide.metrics.objects)
    cog_blocksize: int = 512
    gdal_cache_mb: int = 128
    quicklook: bool = True
    quicklook_max_px: int = 1024
    quicklook_background: str = "elevation"
    metrics: bool = True
    object_overlap: float = 0.1  # a landslide is detected when predictions cover this share of it (as eval)
    size_edges: tuple[float, float] | None = None  # object size classes; None: the scene's 33rd/66th percentiles
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.quicklook_background not in BACKGROUNDS:
            raise ValueError(f"quicklook.background={self.quicklook_background!r}: choose one of {list(BACKGROUNDS)}")
        if self.connectivity not in (4, 8):
            raise ValueError(f"maps.connectivity={self.connectivity}: must be 4 or 8")
        if self.cog_blocksize < 128 or self.cog_blocksize % 16:
            raise ValueError(f"maps.cog_blocksize={self.cog_blocksize}: must be a multiple of 16, at least 128 "
                             "(GDAL's COG driver)")
