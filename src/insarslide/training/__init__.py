"""Running experiments: the train/evaluate drivers, checkpoints and resume, callbacks, test-time
evaluation, loggers and sweeps.

May import: the package root, ``contract``, ``data``, ``metrics``, ``models`` and ``reporting``.
"""
