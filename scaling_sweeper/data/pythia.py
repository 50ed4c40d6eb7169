"""QCD jets from Pythia 8 (pythia8mc) clustered with anti-kT (fastjet), multi-process and seeded.

Each worker runs its own Pythia with a seed derived from the master seed (numpy SeedSequence
spawn), generates exactly its share of the jets, and the shares are concatenated in worker order,
so the output is a deterministic function of (config, n_jets, seed, workers).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import time
from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np

from scaling_sweeper.data.jets import make_jets, wrap_phi
from scaling_sweeper.errors import ConfigError, DataError
from scaling_sweeper.noise import silence_fastjet_banner

PYTHIA_MAX_SEED = 900_000_000
# neutrinos are invisible; Pythia's isVisible() also drops them (and other invisibles)
NEUTRINO_IDS = (12, 14, 16)


@dataclass(frozen=True)
class PythiaConfig:
    """Event generation and jet selection for `generate_jets`."""

    e_cm: float = 13600.0  # GeV, pp centre-of-mass energy
    pt_min: float = 500.0  # GeV, jet pt window lower edge (inclusive)
    pt_max: float = 650.0  # GeV, jet pt window upper edge (inclusive)
    eta_max: float = 2.5  # |jet eta| cut
    pthat_min: float | None = None  # GeV, hard-process pT-hat cut; None -> 0.85 * pt_min
    jet_r: float = 0.8  # anti-kT radius
    max_constituents: int = 128  # constituents kept per jet (highest pt)
    min_constituents: int = 1  # jets with fewer constituents are skipped

    def validate(self) -> PythiaConfig:
        if not 0 < self.pt_min < self.pt_max:
            raise ConfigError(f"pythia: need 0 < pt_min < pt_max, got {self.pt_min}, {self.pt_max}")
        if self.eta_max <= 0 or self.jet_r <= 0 or self.e_cm <= 0:
            raise ConfigError("pythia: eta_max, jet_r and e_cm must be positive")
        if self.max_constituents < 1 or self.min_constituents < 1:
            raise ConfigError("pythia: max_constituents and min_constituents must be >= 1")
        return self

    @property
    def pthat(self) -> float:
        return 0.85 * self.pt_min if self.pthat_min is None else self.pthat_min


def worker_seeds(seed: int, workers: int) -> list[int]:
    """Distinct Pythia seeds (1..9e8) for each worker, derived from the master seed."""
    states = np.random.SeedSequence(seed).spawn(workers)
    return [int(s.generate_state(1, np.uint32)[0]) % (PYTHIA_MAX_SEED - 1) + 1 for s in states]


def worker_quotas(n_jets: int, workers: int) -> list[int]:
    """Split n_jets into per-worker counts (the first n_jets % workers workers get one more)."""
    base, extra = divmod(n_jets, workers)
    return [base + (i < extra) for i in range(workers)]


def _make_pythia(cfg: PythiaConfig, seed: int):
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)  # no banner
    for line in (
        f"Beams:eCM = {cfg.e_cm}",
        "HardQCD:all = on",
        f"PhaseSpace:pTHatMin = {cfg.pthat}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Next:numberCount = 0",
        "Next:numberShowEvent = 0",
        "Next:numberShowInfo = 0",
        "Next:numberShowProcess = 0",
        "Init:showChangedSettings = off",
        "Init:showProcesses = off",
        "Print:quiet = on",
    ):
        if not pythia.readString(line):
            raise DataError(f"pythia8 rejected setting {line!r}")
    if not pythia.init():
        raise DataError("pythia8 initialisation failed")
    return pythia


_progress_queue = None
_SHARE_STATS = ("n_events", "seconds", "cpu_seconds")


def _init_worker(q) -> None:
    global _progress_queue
    _progress_queue = q


def _generate_share(cfg: PythiaConfig, n_jets: int, seed: int, report_every: int = 20) -> dict:
    """Generate exactly n_jets jets with one Pythia; returns flat numpy arrays (see make_jets)."""
    import fastjet

    silence_fastjet_banner()
    pythia = _make_pythia(cfg, seed)
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_r)
    counts, pts, etas, phis, jets = [], [], [], [], []
    n, n_events, pending, t0, c0 = 0, 0, 0, time.perf_counter(), time.process_time()
    while n < n_jets:
        if not pythia.next():
            continue
        n_events += 1
        p4 = np.array(
            [(p.px(), p.py(), p.pz(), p.e()) for p in pythia.event if p.isFinal() and p.isVisible()
             and p.idAbs() not in NEUTRINO_IDS],
            dtype=np.float64,
        )
        pseudo = []
        for i, (px, py, pz, e) in enumerate(p4):
            pj = fastjet.PseudoJet(px, py, pz, e)
            pj.set_user_index(i)
            pseudo.append(pj)
        seq = fastjet.ClusterSequence(pseudo, jet_def)
        for jet in fastjet.sorted_by_pt(seq.inclusive_jets(0.5 * cfg.pt_min)):
            if not (cfg.pt_min <= jet.pt() <= cfg.pt_max and abs(jet.eta()) < cfg.eta_max):
                continue
            idx = np.array([c.user_index() for c in jet.constituents()], dtype=np.int64)
            if len(idx) < cfg.min_constituents:
                continue
            c = p4[idx]
            pt = np.hypot(c[:, 0], c[:, 1])
            eta = np.arcsinh(c[:, 2] / pt)
            phi = np.arctan2(c[:, 1], c[:, 0])
            counts.append(len(idx))
            pts.append(pt)
            etas.append(eta - jet.eta())
            phis.append(wrap_phi(phi - jet.phi_std()))
            jets.append((jet.pt(), jet.eta(), jet.phi_std(), jet.m()))
            n += 1
            pending += 1
            if n >= n_jets:
                break
        if _progress_queue is not None and (pending >= report_every or n >= n_jets):
            _progress_queue.put(pending)
            pending = 0
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))  # noqa: E731
    jk = np.array(jets, dtype=np.float64).reshape(-1, 4)
    return {
        "counts": np.array(counts, dtype=np.int64),
        "part_pt": cat(pts),
        "part_eta_rel": cat(etas),
        "part_phi_rel": cat(phis),
        "jet_pt": jk[:, 0],
        "jet_eta": jk[:, 1],
        "jet_phi": jk[:, 2],
        "jet_mass": jk[:, 3],
        "n_events": n_events,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


class _BarFeed:
    """Queue stand-in for in-process generation: put(n) advances the bar."""

    def __init__(self, bar):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _progress_bar(total: int, enabled: bool | None):
    """A bar on a terminal, a line every few seconds in a log (scaling_sweeper.progress)."""
    from scaling_sweeper.progress import Progress

    return Progress(total, "pythia8 jets", unit="jet", enabled=enabled)


def generate_jets(
    n_jets: int,
    *,
    seed: int = 0,
    workers: int = 1,
    cfg: PythiaConfig | None = None,
    progress: bool | None = None,
    stats: dict | None = None,
) -> ak.Array:
    """Generate `n_jets` QCD jets (see PythiaConfig) in `workers` processes; deterministic in
    (cfg, n_jets, seed, workers). progress: None -> a bar on a terminal, else a line every few
    seconds (scaling_sweeper.progress); False -> silent.
    If `stats` is a dict it receives n_events, wall_s, worker_s and worker_cpu_s (summed over
    workers, Pythia init included) and jets_per_s_per_core (jets per CPU-second of a worker, so a
    busy machine does not skew it)."""
    cfg = (cfg or PythiaConfig()).validate()
    if n_jets < 1:
        raise ConfigError(f"n_jets must be >= 1, got {n_jets}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    workers = min(workers, n_jets)
    seeds, quotas = worker_seeds(seed, workers), worker_quotas(n_jets, workers)
    t0 = time.perf_counter()
    bar = _progress_bar(n_jets, progress)
    try:
        if workers == 1:  # in-process: progress goes straight to the bar
            _init_worker(_BarFeed(bar))
            try:
                shares = [_generate_share(cfg, quotas[0], seeds[0])]
            finally:
                _init_worker(None)
        else:
            # spawn: workers must not inherit the parent's threads (torch, ray) through fork
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            with ctx.Pool(workers, initializer=_init_worker, initargs=(q,)) as pool:
                results = [pool.apply_async(_generate_share, (cfg, k, s)) for k, s in zip(quotas, seeds)]
                while not all(r.ready() for r in results):
                    try:
                        bar.update(q.get(timeout=0.2))
                    except queue_mod.Empty:
                        bar.update(0)  # a line every few seconds in a log, even between reports
                shares = [r.get() for r in results]  # re-raises a worker's exception
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    merged = {k: np.concatenate([s[k] for s in shares]) for k in shares[0] if k not in _SHARE_STATS}
    if stats is not None:
        cpu_s = sum(s["cpu_seconds"] for s in shares)
        stats.update(
            n_events=sum(s["n_events"] for s in shares),
            wall_s=wall,
            worker_s=sum(s["seconds"] for s in shares),
            worker_cpu_s=cpu_s,
            jets_per_s_per_core=n_jets / cpu_s if cpu_s > 0 else float("nan"),
            config=asdict(cfg),
        )
    counts = merged.pop("counts")
    return make_jets(counts, **merged, max_constituents=cfg.max_constituents)
