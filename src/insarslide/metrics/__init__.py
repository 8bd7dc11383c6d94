"""Scores computed from predictions and labels: pixel metrics, object metrics, baselines, uncertainty
and calibration. Shared by training, evaluation, prediction, reports and notebooks.

May import: the package root, ``contract`` and ``data``.
"""
