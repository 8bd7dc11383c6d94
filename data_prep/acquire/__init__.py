"""Sentinel-1 acquisition (thesis section 4.2): find the pre/post-event IW SLC pair and download it from CDSE.

    python -m data_prep.acquire event=iburi_2018 aoi='POLYGON((...))' out_dir=DIR

One module per job: :mod:`.catalogue` searches the OData catalogue,
:mod:`.pairs` chooses the pair, :mod:`.auth` holds the credentials and the
token (in memory only), :mod:`.transfer` downloads and verifies, :mod:`.safe`
checks and unpacks SAFE archives, :mod:`.orbits` fetches precise orbit files
for SNAP, and :mod:`.cli` is the Hydra command.
"""
