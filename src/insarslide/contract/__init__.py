"""The scene and patch contract (docs/data_format.md): band spec, CF decoding, SNAP exports, scene reading,
validation and writing, and the one pixel-area rule (geometry).

May import: the package root only (atomic, config, runfiles, settings).
"""
