"""Classify photos with pretrained ImageNet networks (no Qt here).

Modules: ``zoo`` (model catalogue and loading), ``lite0`` (the offline default network),
``weights`` (verified downloads into torch's cache), ``images`` (opening files, preprocessing),
``classifier`` (batched, parallel inference), ``gradcam`` (heatmaps), ``jobs`` (job functions for
the CLI and the GUI), ``cli`` (``python -m engine classify``).
"""
