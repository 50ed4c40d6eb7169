"""Analysis of sweep results: polars tables, fits, learnable window, plotly report.

Imports no Ray, torch or DeepSpeed: usable on a laptop with only the results folder.
"""
