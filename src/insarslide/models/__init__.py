"""The network and its training rules: the LightningModule (loss, threshold, optimiser) and the masked loss.

May import: the package root, ``contract``, ``data`` and ``metrics``.
"""
