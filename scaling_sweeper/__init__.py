"""scaling-sweeper: neural-scaling-law sweeps for jet generation on Ray.

Layers, low -> high (a module imports only its own layer and lower ones; tests/test_layers.py):
base, model, data, train, evaluate, results, sweep, cluster, cli; `analysis` sits beside and reads
base and results. docs/DESIGN.md describes them. Importing the package is cheap: torch, Ray and
DeepSpeed are imported only by the modules that need them.
"""

__version__ = "0.1.0"
