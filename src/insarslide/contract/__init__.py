"""The scene and patch contract (docs/data_format.md): band spec, CF decoding, SNAP exports, scene reading.

May import: the package root only (atomic, config, runfiles).
"""
