"""Tables and figures from finished runs (metrics.json, curves.json, maps.npz, failures.csv).

May import: the package root and ``metrics``.
"""
