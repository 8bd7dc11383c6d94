"""The SNAP / SNAPHU DInSAR chain: operator table, graphs, gpt and esa_snappy runners, SNAPHU, manifest, conversion.

Entry point: ``python -m data_prep.process`` (docs/processing.md).
"""
