"""From a checkpoint and scene files to maps: windows and blending, prediction, GeoTIFF/GeoJSON/HTML maps.

May import: the package root, ``contract``, ``data``, ``metrics``, ``models`` and ``training`` (checkpoint loading).
"""
