"""Data preparation: scenes from SNAP, the NumPy DInSAR chain or the simulator; inventories; patches; Sentinel-1 acquisition."""
