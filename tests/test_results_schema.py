"""The results schema is pinned: the tables keep the columns, order and types they had before the
schema moved to scaling_sweeper/base/results_schema.py (issue 23), so every existing sweep's
tables still concatenate with new ones. A new column is appended to the schema AND here."""

from __future__ import annotations

import polars as pl

from scaling_sweeper.base import results_schema as rs
from scaling_sweeper.results.tables import SCHEMAS

# the tables' columns at main d2d973f (analysis/tables.py), in order
PINNED = {
    "trials": [
        ("sweep", pl.String()),
        ("phase", pl.String()),
        ("cell_id", pl.String()),
        ("size", pl.String()),
        ("N", pl.Int64()),
        ("N_incl", pl.Int64()),
        ("n_layer", pl.Int64()),
        ("d_model", pl.Int64()),
        ("n_head", pl.Int64()),
        ("D", pl.Int64()),
        ("tokens_seen", pl.Int64()),
        ("passes", pl.Float64()),
        ("C_planned", pl.Float64()),
        ("C_spent", pl.Float64()),
        ("C_exact", pl.Float64()),
        ("lr", pl.Float64()),
        ("batch", pl.Int64()),
        ("seq_len", pl.Int64()),
        ("seed", pl.Int64()),
        ("status", pl.String()),
        ("final_val_loss", pl.Float64()),
        ("best_val_loss", pl.Float64()),
        ("swd", pl.Float64()),
        ("swd_err", pl.Float64()),
        ("swd_floor", pl.Float64()),
        ("invalid_frac", pl.Float64()),
        ("tokenizer_kind", pl.String()),
        ("tokenizer_id", pl.String()),
        ("codebook_size", pl.Int64()),
        ("wall_s", pl.Float64()),
        ("tokens_per_s", pl.Float64()),
        ("started_at", pl.String()),
        ("finished_at", pl.String()),
        ("ray_trial_id", pl.String()),
        ("error", pl.String()),
        ("precision", pl.String()),
        ("reused_from", pl.String()),
        # teacher data (issue 29): the known entropy, null for real data
        ("data_entropy", pl.Float64()),
        ("data_entropy_err", pl.Float64()),
        ("data_entropy_val", pl.Float64()),
        # seeds (issue 25 item 9): the cell without its seed
        ("cell_group", pl.String()),
        ("extra", pl.String()),
        ("written_at", pl.Float64()),
    ],
    "curves": [
        ("sweep", pl.String()),
        ("cell_id", pl.String()),
        ("step", pl.Int64()),
        ("tokens", pl.Int64()),
        ("flops", pl.Float64()),
        ("train_loss", pl.Float64()),
        ("val_loss", pl.Float64()),
        ("val_loss_err", pl.Float64()),
        ("lr", pl.Float64()),
        ("tokens_per_s", pl.Float64()),
        ("wall_s", pl.Float64()),
    ],
    "evals": [
        ("sweep", pl.String()),
        ("cell_id", pl.String()),
        ("step", pl.Int64()),
        ("metric", pl.String()),
        ("value", pl.Float64()),
        ("err", pl.Float64()),
    ],
    "positions": [
        ("sweep", pl.String()),
        ("cell_id", pl.String()),
        ("step", pl.Int64()),
        ("position", pl.Int64()),
        ("loss", pl.Float64()),
        ("count", pl.Int64()),
        ("baseline", pl.Float64()),
        ("baseline_kind", pl.String()),  # issue 25 item 7 (null in older tables)
    ],
}


def test_tables_keep_their_columns_and_types():
    assert {t: list(s.items()) for t, s in SCHEMAS.items()} == PINNED


def test_row_keys_are_what_a_run_folder_holds():
    """result.json starts with the trainer's, the sweep's and the evaluation's columns (null until
    filled); `reused_from` appears only in reused cells; the table writer adds extra/written_at."""
    assert rs.ROW_KEYS == tuple(c.name for c in rs.RESULT_COLUMNS if c.name != "reused_from")
    assert rs.EVAL_ROW_KEYS == ("swd", "swd_err", "swd_floor", "invalid_frac")
    assert [c.name for c in rs.TRIAL_COLUMNS][-2:] == ["extra", "written_at"]
    assert not set(rs.EXTRA_KEYS) & {c.name for c in rs.TRIAL_COLUMNS}
    assert all(c.type in (str, int, float) and c.doc for cols in rs.TABLE_COLUMNS.values() for c in cols)
