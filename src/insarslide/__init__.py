"""insarslide: landslide mapping from Sentinel-1 InSAR with deep learning."""

__version__ = "0.1.0"
