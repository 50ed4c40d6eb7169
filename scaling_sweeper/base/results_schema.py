"""The results schema: the keys, types and units of the results row and of every results table.

One definition for everything that writes or reads results: the trainer fills the row
(`train.lifecycle`), the evaluation adds its columns (`evaluate.run`), the sweep adds its own
(`sweep.cell_trial`, `sweep.reuse`), the table writer stores it (`results.tables`) and `analysis`
reads it. It lives in the base layer because the trainer, below the results layer, fills the row.

    result.json of a run folder         one results row (RESULT_COLUMNS, plus EXTRA_KEYS)
    tables/trials/<cell_id>.parquet     that row: RESULT_COLUMNS + `extra` + `written_at`
    tables/curves/<cell_id>.parquet     one row per metrics.jsonl record (CURVE_COLUMNS)
    tables/evals/<cell_id>.parquet      one row per evaluated metric (EVAL_COLUMNS)
    tables/positions/<cell_id>.parquet  validation loss per constituent position (POSITION_COLUMNS)

A column is (name, type, who fills it, meaning with units). Types are python's str, int, float
(the tables store String, Int64, Float64). Row keys that are not columns are kept in the trials
table's `extra` column (a JSON object). A new column is one entry here (existing tables read it as
null); the order of the entries is the tables' column order.
"""

from __future__ import annotations

from dataclasses import dataclass

# who fills a column of the results row
TRAINER, SWEEP, EVALUATION, REUSE, WRITER = "train", "sweep", "evaluate", "reuse", "tables"


@dataclass(frozen=True)
class Column:
    name: str
    type: type  # str | int | float
    by: str  # who fills it: train, sweep, evaluate, reuse, tables (the table writer)
    doc: str  # meaning, with units


# The results row (result.json; the `trials` table). Units: tokens are sequence positions, compute
# is FLOPs, time is seconds.
RESULT_COLUMNS: tuple[Column, ...] = (
    Column("sweep", str, SWEEP, "sweep name (null for a lone `sweeper train` run)"),
    Column("phase", str, SWEEP, "phase of the sweep: model_size, data_size, isoflop, grid, repetition, wsd"),
    Column("cell_id", str, SWEEP, "12 hex digits of sha256 over the cell's training config"),
    Column("size", str, TRAINER, "model preset (Pico .. XXL)"),
    Column("N", int, TRAINER, "non-embedding parameters"),
    Column("N_incl", int, TRAINER, "all parameters, the tied embedding counted once"),
    Column("n_layer", int, TRAINER, "transformer blocks"),
    Column("d_model", int, TRAINER, "residual stream width"),
    Column("n_head", int, TRAINER, "attention heads"),
    Column("D", int, TRAINER, "training-set size actually used: whole rows of the first D tokens (tokens)"),
    Column("tokens_seen", int, TRAINER, "steps * batch * seq_len of the useful steps (tokens)"),
    Column("passes", float, TRAINER, "tokens_seen / D"),
    Column("C_planned", float, TRAINER, "6 * N_incl * tokens_seen as planned (FLOPs)"),
    Column("C_spent", float, TRAINER, "6 * N_incl * tokens of every executed step, redone steps included (FLOPs)"),
    Column("C_exact", float, TRAINER, "Chinchilla count with attention for the same tokens (FLOPs)"),
    Column("lr", float, TRAINER, "peak learning rate"),
    Column("batch", int, TRAINER, "rows (jets) per optimizer step"),
    Column("seq_len", int, TRAINER, "token row length (positions)"),
    Column("seed", int, TRAINER, "model init, batch order, dropout"),
    Column("status", str, TRAINER, "done | failed | stopped (table rows of unfinished cells: their STATUS)"),
    Column("final_val_loss", float, TRAINER, "validation loss at the last step (nats/token)"),
    Column("best_val_loss", float, TRAINER, "lowest validation loss of the run (nats/token)"),
    Column("swd", float, EVALUATION, "sliced Wasserstein distance, generated vs real jets"),
    Column("swd_err", float, EVALUATION, "bootstrap standard deviation of swd"),
    Column("swd_floor", float, EVALUATION, "the same statistic between two real samples"),
    Column("invalid_frac", float, EVALUATION, "fraction of generated jets that are invalid"),
    Column("tokenizer_kind", str, TRAINER, "binned | vq | ... (null: a tokens folder without a named tokenizer)"),
    Column("tokenizer_id", str, TRAINER, "<kind>-<sha256[:12]> of the tokens folder's tokenizer file"),
    Column("codebook_size", int, TRAINER, "content tokens of that tokenizer (vocab_size - 3)"),
    Column("wall_s", float, TRAINER, "wall seconds of training, all attempts (s)"),
    Column("tokens_per_s", float, TRAINER, "tokens_seen / seconds in training steps, timed to a device sync"),
    Column("started_at", str, TRAINER, "UTC ISO time the first attempt started"),
    Column("finished_at", str, TRAINER, "UTC ISO time the run ended"),
    Column("ray_trial_id", str, SWEEP, "the Ray Tune trial that trained the cell"),
    Column("error", str, TRAINER, "why a run failed (null otherwise)"),
    Column("precision", str, TRAINER, "training numerics: bf16 | fp32 (null for rows written before it)"),
    Column("reused_from", str, REUSE, "<sweep>/<cell_id> that trained this cell (one config, trained once)"),
    Column("data_entropy", float, TRAINER, "teacher data only (docs/calibration.md): the data's true entropy H, "
           "what the validation loss converges to (nats/token); null for real data"),
    Column("data_entropy_err", float, TRAINER, "standard error of data_entropy (nats/token)"),
    Column("data_entropy_val", float, TRAINER, "the teacher's loss on exactly this cell's validation rows (nats/token)"),
    Column("cell_group", str, SWEEP, "the cell without its seed: the cell id of its config at seed 0, shared by the "
           "seed runs of one cell (spec `seeds`; null in rows written before it)"),
)

# Keys of the results row that are not table columns (they land in the trials table's `extra`)
EXTRA_KEYS: dict[str, str] = {
    "strategy": "how the cell trained: single, or the DeepSpeed template (zero3, zero2_offload, ...)",
    "compile": "whether the training loss was torch.compile'd",
    "tokenizer_health": "codebook use, per-feature MAE, round-trip SWD of the tokens folder",
    "steps_redone": "steps executed twice after crashes (charged in C_spent, not in tokens_seen)",
    "lr_schedule": "wsd (cosine rows leave it out); with decay_fraction and decay_shape (docs/wsd.md)",
    "decay_fraction": "wsd: the cooldown's share of the steps (0: a trunk, no cooldown)",
    "decay_shape": "wsd: the cooldown's shape (1-sqrt, linear, cosine)",
    "wsd_role": "trunk (a stable run: not an end-of-training point, left out of fits) | cell (ends in its cooldown)",
    "branch_of": "<sweep>/<cell_id> of the trunk a WSD branch was cooled down from",
    "branch_step": "the trunk step the branch started from (its cooldown's first step)",
    "C_charged": "FLOPs this run executed and the ledger charged: C_spent less a branch's trunk prefix",
    "design_decision": "adaptive design: the decision (line of design.jsonl) that chose the cell",
    "design_reason": "adaptive design: why it was chosen (seed, explore, gain)",
}

# The trials table: the results row, then what the table writer adds
TRIAL_COLUMNS: tuple[Column, ...] = RESULT_COLUMNS + (
    Column("extra", str, WRITER, "JSON object of the row's keys that are not columns (EXTRA_KEYS, w1_*)"),
    Column("written_at", float, WRITER, "unix time the table file was written; the latest row of a cell wins"),
)

# the first columns of every per-cell table but trials: which cell a row belongs to
CELL_KEY_COLUMNS: tuple[Column, ...] = (
    Column("sweep", str, WRITER, "sweep name"),
    Column("cell_id", str, WRITER, "cell"),
)

# One row per metrics.jsonl record (a log or evaluation step of training)
CURVE_COLUMNS: tuple[Column, ...] = CELL_KEY_COLUMNS + (
    Column("step", int, TRAINER, "optimizer steps done"),
    Column("tokens", int, TRAINER, "tokens seen so far (useful steps)"),
    Column("flops", float, TRAINER, "C so far: 6 * N_incl * tokens (FLOPs)"),
    Column("train_loss", float, TRAINER, "mean training loss since the previous record (nats/token)"),
    Column("val_loss", float, TRAINER, "validation loss, on evaluation steps (nats/token)"),
    Column("val_loss_err", float, TRAINER, "statistical error of val_loss (jet-to-jet spread)"),
    Column("lr", float, TRAINER, "learning rate of the last step"),
    Column("tokens_per_s", float, TRAINER, "throughput since the previous record"),
    Column("wall_s", float, TRAINER, "wall seconds since the run started, all attempts (s)"),
)

# Long format: one row per evaluated metric (swd, swd_floor, invalid_frac, w1_jet_pt, ...)
EVAL_COLUMNS: tuple[Column, ...] = CELL_KEY_COLUMNS + (
    Column("step", int, EVALUATION, "training step evaluated (null: the final evaluation)"),
    Column("metric", str, EVALUATION, "metric name"),
    Column("value", float, EVALUATION, "its value"),
    Column("err", float, EVALUATION, "its statistical uncertainty, if known"),
)

# One row per (evaluation step, position): validation loss per constituent, and the stop token
POSITION_COLUMNS: tuple[Column, ...] = CELL_KEY_COLUMNS + (
    Column("step", int, TRAINER, "training step of the evaluation"),
    Column("position", int, TRAINER, "constituent index (1-based); null: the stop token"),
    Column("loss", float, TRAINER, "mean cross-entropy there over the validation jets (nats)"),
    Column("count", int, TRAINER, "validation jets with a target there"),
    Column("baseline", float, TRAINER, "per-position unigram loss (nats); held out: fitted on the cell's own training rows, scored on its validation jets"),
    Column("baseline_kind", str, TRAINER, "held_out | in_sample (records written before the held-out baseline; null in older tables)"),
)

TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "trials": TRIAL_COLUMNS,
    "curves": CURVE_COLUMNS,
    "evals": EVAL_COLUMNS,
    "positions": POSITION_COLUMNS,
}

# the row keys a run folder's result.json carries from the start (null until filled); reused_from
# only appears in reused cells
ROW_KEYS: tuple[str, ...] = tuple(c.name for c in RESULT_COLUMNS if c.by in (TRAINER, SWEEP, EVALUATION))
# the row keys an evaluation fills (plus w1_<observable>, kept in `extra`)
EVAL_ROW_KEYS: tuple[str, ...] = tuple(c.name for c in RESULT_COLUMNS if c.by == EVALUATION)
