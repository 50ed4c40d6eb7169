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


def resolve_token_shape(data: str | None, vocab_size: int | None, seq_len: int | None) -> tuple[int, int]:
    """(vocab_size, seq_len) for sizing a model: explicit values win, then the tokens folder
    `data` (its index.json), then the default layout."""
    if data and (vocab_size is None or seq_len is None):
        from scaling_sweeper.data.shards import ShardIndex

        idx = ShardIndex.load(data)
        vocab_size = vocab_size or idx.vocab_size
        seq_len = seq_len or idx.seq_len
    return vocab_size or DEFAULT_VOCAB_SIZE, seq_len or DEFAULT_SEQ_LEN
