"""Plots of result files: each reads a suite's JSON and nothing else, and writes PNGs beside it.

``python -m benchmarks.plots FILE.json`` draws whatever plots its suite has.
"""
