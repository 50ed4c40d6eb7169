"""Phase design in the sweep (docs/adaptive_design.md): the spec's `design:` section and the
sweep's cells -> an analysis.design.DesignSpec, validated before any compute; the finished cells
as the design's observations, read from the run folders (the source of truth); the design's
history, one JSON line per decision in <sweep>/design.jsonl.

Candidates are the phase's cells (sizes x tokens x seeds): Candidate(cell_id, N, tokens_seen, C),
N the non-embedding parameters, C = 6 N_incl tokens_seen (FLOPs). A finished cell is
Observation(cell_id, final_val_loss, C_spent); a cell adopted from another sweep (reuse.py) is
charged 0 FLOPs, as the ledger charges it; a failed cell enters with loss nan (it spent FLOPs and
is never proposed again). The design keeps no other state: after a killed driver the same run
folders give the same observations and so the same next proposal. The history only records; it
is read back for one thing, the cells the design had admitted that did not finish (a killed or
stopped driver's running cells), which a resumed driver continues first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from analysis.design import Candidate, DesignError, DesignSpec, Observation, Target, default_seed, next_cells
from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.runfolder import append_jsonl, is_done, read_jsonl, read_result, read_status
from scaling_sweeper.results.status import DESIGN_FILE
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.reuse import REUSED_FILE
from scaling_sweeper.sweep.spec import SweepSpec

HISTORY_FILE = DESIGN_FILE  # <sweep>/design.jsonl

# the engine's field names -> what the user wrote in the spec (error messages)
_SPEC_FIELD = {"candidates": "sizes x tokens (the design's candidates)", "batch": "resources.max_concurrent"}


def design_budget(spec: SweepSpec, cells: list[Cell]) -> float:
    """FLOPs the design may spend: design.budget, else budget.flops, else the whole grid's planned C
    (the design never spends more than training every candidate)."""
    d = spec.design
    if d is not None and d.budget is not None:
        return float(d.budget)
    if spec.budget.flops is not None:
        return float(spec.budget.flops)
    return float(sum(c.C for c in cells))


def design_spec(spec: SweepSpec, cells: list[Cell]) -> DesignSpec:
    """The DesignSpec of an adaptive sweep: its cells as candidates, the spec's law, target, budget,
    seed cells, noise; batch = resources.max_concurrent. DesignError naming the spec field (or
    ConfigError) for anything the design cannot run with: called before Ray starts."""
    d = spec.design
    if d is None:
        raise ConfigError(f"design: phase {spec.phase} needs a `design` section")
    if spec.grid:
        raise ConfigError(f"grid: a design's candidates differ by size, tokens and seed only; the grid axes "
                          f"{', '.join(sorted(spec.grid))} would be read as replicates of one point. Fix them in "
                          "train: or run one design per value")
    cands = [Candidate(c.cell_id, float(c.N), float(c.tokens_seen), float(c.C),
                       label=f"{c.size} T={c.tokens_seen:.3g} seed {c.seed}") for c in cells]
    try:
        return DesignSpec(
            d.law, tuple(cands), Target(**to_dict(d.target)), design_budget(spec, cells),
            seed_cells=tuple(d.seed_cells) if d.seed_cells is not None else None,
            batch=spec.resources.max_concurrent, noise=d.noise, level=d.level, min_rel_gain=d.min_rel_gain,
            seed=d.seed,
        )
    except DesignError as e:
        name, _, rest = str(e).partition(":")
        raise DesignError(f"{spec.name}: {_SPEC_FIELD.get(name, 'design.' + name)}:{rest}") from None


def observation(run_dir: Path, cell_id: str) -> Observation | None:
    """What a cell's run folder tells the design: its final loss and spent FLOPs when done (0 FLOPs
    when adopted from another sweep), loss nan when failed, None while not finished."""
    if is_done(run_dir):
        row = read_result(run_dir) or {}
        loss = row.get("final_val_loss")
        loss = float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else math.nan
        spent = 0.0 if (run_dir / REUSED_FILE).exists() else row.get("C_spent")
        return Observation(cell_id, loss, float(spent) if isinstance(spent, (int, float)) else None)
    if read_status(run_dir) == "failed":
        return Observation(cell_id, math.nan, None)
    return None


def observations(sweep_dir: Path, cells: Iterable[Cell]) -> dict[str, Observation]:
    """cell_id -> Observation for every finished cell of the sweep."""
    out = {}
    for c in cells:
        o = observation(Path(sweep_dir) / c.cell_id, c.cell_id)
        if o is not None:
            out[c.cell_id] = o
    return out


def read_history(sweep_dir: Path) -> list[dict[str, Any]]:
    """The design's decisions so far (design.jsonl), oldest first."""
    return read_jsonl(Path(sweep_dir) / HISTORY_FILE)


def design_facts(spec: DesignSpec) -> dict[str, Any]:
    """What every history record repeats about the design (the report reads the last one): its law,
    noise prior, budget, candidates and what training all of them would cost (FLOPs)."""
    return {"law": spec.law, "noise": spec.noise, "level": spec.level, "budget": spec.budget,
            "n_candidates": len(spec.candidates), "grid_flops": float(sum(c.cost for c in spec.candidates))}


def append_history(sweep_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append one decision (numbered after the ones on file, timestamped) to design.jsonl."""
    rec = {"decision": len(read_history(sweep_dir)), "t": time.time(), **record}
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    append_jsonl(Path(sweep_dir) / HISTORY_FILE, rec)
    return rec


def admitted_unfinished(sweep_dir: Path, cells: Iterable[Cell]) -> list[Cell]:
    """Cells the design admitted earlier (history) that have not finished: a killed or stopped
    driver's running cells, in the order they were admitted. A resumed driver continues them
    first (from their own checkpoints) before asking the design for more."""
    by_id = {c.cell_id: c for c in cells}
    order = [r["admitted"] for r in read_history(sweep_dir) if r.get("admitted") in by_id]
    seen: set[str] = set()
    out = []
    for k in order:
        if k not in seen and observation(Path(sweep_dir) / k, k) is None:
            seen.add(k)
            out.append(by_id[k])
    return out


def finished_design(spec: SweepSpec, cells: list[Cell]) -> str | None:
    """The stop reason when the design has nothing left to do on the cells on disk (no admitted cell
    unfinished, and the design stops on the finished ones: e.g. a rerun after the goal was met),
    else None. The driver then starts no Ray, as for a sweep whose cells are all done."""
    if admitted_unfinished(spec.sweep_dir, cells):
        return None
    step = next_cells(design_spec(spec, cells), list(observations(spec.sweep_dir, cells).values()), [])
    return step.stop


def format_design(spec: SweepSpec, cells: list[Cell]) -> str:
    """What `sweeper plan` adds for an adaptive sweep: the law, target, budget and the seed cells."""
    ds = design_spec(spec, cells)
    seed = ds.seed_cells if ds.seed_cells is not None else default_seed(ds)
    grid = sum(c.cost for c in ds.candidates)
    return "\n".join([
        f"design: {ds.law} law, target {ds.target.describe()} ({ds.level:.0%} interval), noise prior {ds.noise:g} nats",
        f"design budget: {ds.budget:.4g} FLOPs (all {len(ds.candidates)} candidates: {grid:.4g}); "
        f"{ds.batch} cell(s) at once",
        f"seed cells (trained first): {', '.join(f'{k} ({ds.by_key[k].label})' for k in seed)}",
        "then, as trials finish, the cell with the largest expected variance cut of the target per FLOP, until "
        "the goal is met or the budget is spent",
    ])
