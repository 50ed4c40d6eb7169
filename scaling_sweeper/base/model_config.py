"""The model's config, the size ladder and closed-form parameter counts, without torch.

Everything the planner needs (sweep cells, FLOP accounting, `sweeper plan`, memory estimates)
lives here so a sweep driver never imports torch; `scaling_sweeper.model` (the torch modules)
re-exports these names. Parameter counts: see `scaling_sweeper.model` (N, N_incl, tied head).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_sweeper.base.errors import ConfigError


@dataclass
class GPTConfig:
    n_layer: int  # transformer blocks
    n_head: int  # attention heads; d_model % n_head == 0
    d_model: int  # residual stream width
    vocab_size: int  # token ids 0..vocab_size-1
    block_size: int  # max context length (positions)
    dropout: float = 0.0  # residual / attention / embedding dropout (training only)
    bias: bool = False  # biases in Linear and LayerNorm

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "vocab_size", "block_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ConfigError(f"GPTConfig: d_model {self.d_model} not divisible by n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")



def count_params(cfg: GPTConfig) -> tuple[int, int]:
    """Closed-form (N, N_incl) for `GPT(cfg)`, without building it."""
    d = cfg.d_model
    b = 1 if cfg.bias else 0
    per_layer = (
        2 * d * (1 + b)  # ln_1, ln_2 (weight [+ bias])
        + 3 * d * d + 3 * d * b  # c_attn
        + d * d + d * b  # attn c_proj
        + 4 * d * d + 4 * d * b  # c_fc
        + 4 * d * d + d * b  # mlp c_proj
    )
    n = cfg.n_layer * per_layer + d * (1 + b)  # + ln_f
    n_incl = n + cfg.vocab_size * d + cfg.block_size * d  # + wte (tied head) + wpe
    return n, n_incl


# ---------------------------------------------------------------------------------------------
# The size ladder


@dataclass(frozen=True)
class SizePreset:
    name: str
    n_layer: int
    n_head: int
    d_model: int
    lr: float  # reference peak learning rate (Ranger)


SIZES: dict[str, SizePreset] = {
    p.name: p
    for p in (
        #          name   layers heads width  lr           N (bias=False) ~
        SizePreset("Pico", 1, 2, 32, 1e-2),  # 1.2e4
        SizePreset("XXS", 2, 3, 48, 5e-3),  # 5.5e4
        SizePreset("XS", 3, 4, 64, 5e-3),  # 1.5e5
        SizePreset("S", 4, 4, 96, 3e-3),  # 4.4e5
        SizePreset("M-", 6, 4, 128, 3e-3),  # 1.2e6
        SizePreset("M", 8, 6, 192, 3e-3),  # 3.5e6
        SizePreset("L", 10, 5, 320, 1e-3),  # 1.2e7
        SizePreset("XL", 12, 8, 512, 1e-3),  # 3.8e7
        SizePreset("XXL", 16, 12, 768, 3e-4),  # 1.1e8
    )
}


def get_size(name: str) -> SizePreset:
    """The preset called `name`; ConfigError listing the valid names otherwise."""
    try:
        return SIZES[name]
    except KeyError:
        raise ConfigError(f"unknown size {name!r}; valid sizes: {', '.join(SIZES)}") from None


def config_for(size: str | SizePreset, vocab_size: int, block_size: int, dropout: float = 0.0) -> GPTConfig:
    """GPTConfig of a preset for a given vocabulary and context length."""
    p = get_size(size) if isinstance(size, str) else size
    return GPTConfig(
        n_layer=p.n_layer,
        n_head=p.n_head,
        d_model=p.d_model,
        vocab_size=vocab_size,
        block_size=block_size,
        dropout=dropout,
    )


def config_for_rows(size: str | SizePreset, vocab_size: int, seq_len: int, dropout: float = 0.0) -> GPTConfig:
    """The GPTConfig the trainers build for token rows of `seq_len`: a row gives input row[:-1] and
    target row[1:], so the context (block_size, hence the position embedding) is seq_len - 1."""
    return config_for(size, vocab_size, seq_len - 1, dropout)
