"""From patch files to batches: patch store (and the patch writer data_prep uses), splits, size buckets,
samplers, oversampling, smoothing, augmentation, normalisation and the LightningDataModule.

May import: the package root and ``contract``.
"""
