"""scaling-sweeper: neural-scaling-law sweeps for jet generation on Ray.

Importing the package is cheap: torch, Ray and DeepSpeed are imported only by the modules
that need them (model, train, sweep, distributed).
"""

__version__ = "0.1.0"
