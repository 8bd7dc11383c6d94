"""From a checkpoint and scene files to maps: the checkpoint's model, options, windows and blending, provenance,
prediction, GeoTIFF/GeoJSON/HTML maps and their browser check.

May import: the package root, ``contract``, ``data``, ``metrics``, ``models`` and ``training`` (checkpoint loading).
"""
