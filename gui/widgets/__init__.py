"""Reusable widgets; each file is owned by the tab named in its prefix (common.py: all tabs)."""
