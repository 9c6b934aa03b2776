"""Diagnostics: gradient flow, gradient health, attention maps, timing and memory profiles."""
