"""The default token layout, importable without awkward or torch (the CLI reads it at start-up).

Bins for (log pt/GeV, eta_rel, phi_rel): 32 log-pt bins keep the tokenize-decode round trip inside
the SWD floor (16 smear jet pT by ~5% per jet and inflate the round-trip SWD above the floor);
32*16*16 = 8192 content tokens, the codebook size of OmniJet-alpha, plus start, stop and pad.
A row is [start, c_1 .. c_n, stop, pad ...] with at most DEFAULT_MAX_CONSTITUENTS constituents.
"""

DEFAULT_N_BINS: tuple[int, int, int] = (32, 16, 16)
DEFAULT_VOCAB_SIZE = DEFAULT_N_BINS[0] * DEFAULT_N_BINS[1] * DEFAULT_N_BINS[2] + 3
DEFAULT_MAX_CONSTITUENTS = 128
DEFAULT_SEQ_LEN = DEFAULT_MAX_CONSTITUENTS + 2
