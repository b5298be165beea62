"""Compound figures into panels: boxes (layout) and sub-captions (captions)."""
