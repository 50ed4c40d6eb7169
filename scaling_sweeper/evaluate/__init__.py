"""Physics evaluation of trained runs: sampling jets (generate), observables, sliced Wasserstein
distance with bootstrap and floor (swd), and `evaluate_run` tying them to a run folder (run).

Submodules are imported explicitly (`from scaling_sweeper.evaluate.swd import ...`): observables
and swd need only numpy/awkward/scipy; generate and run need torch.
"""
