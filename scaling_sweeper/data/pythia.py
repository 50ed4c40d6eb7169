"""QCD jets from Pythia 8 (pythia8mc) clustered with anti-kT (fastjet), in seeded chunks.

The jets are made in chunks of `chunk_jets` jets: chunk i runs its own Pythia with seed
`chunk_seed(seed, i)` (numpy SeedSequence child i of the master seed) and generates exactly its
quota. Chunks are concatenated in chunk order, so the output is a deterministic function of
(config, n_jets, seed, chunk_jets) and does not depend on how many processes ran the chunks; the
first k chunks of a larger request are the jets of a smaller one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.base.quiet import silence_fastjet_banner
from scaling_sweeper.data.jets import make_jets, wrap_phi

PYTHIA_MAX_SEED = 900_000_000
DEFAULT_CHUNK_JETS = 5_000  # jets per chunk: ~1.5 min of Pythia per core; peak memory per task ~tens of MB
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


def chunk_seed(seed: int, index: int) -> int:
    """Pythia seed (1..9e8) of chunk `index`: child `index` of the master seed's SeedSequence
    (independent of how many chunks there are)."""
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint32)[0]
    return int(state) % (PYTHIA_MAX_SEED - 1) + 1


def chunk_quotas(n_jets: int, chunk_jets: int) -> list[int]:
    """Split n_jets into chunks of chunk_jets (the last one holds the rest)."""
    if chunk_jets < 1:
        raise ConfigError(f"chunk_jets must be >= 1, got {chunk_jets}")
    return [min(chunk_jets, n_jets - lo) for lo in range(0, n_jets, chunk_jets)]


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


_SHARE_STATS = ("n_events", "seconds", "cpu_seconds")


def _generate_share(cfg: PythiaConfig, n_jets: int, seed: int) -> dict:
    """Generate exactly n_jets jets with one Pythia; returns flat numpy arrays (see make_jets)."""
    import fastjet

    silence_fastjet_banner()
    pythia = _make_pythia(cfg, seed)
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_r)
    counts, pts, etas, phis, jets = [], [], [], [], []
    n, n_events, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
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
            if n >= n_jets:
                break
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


def generate_chunk(cfg: PythiaConfig, n_jets: int, seed: int) -> tuple[ak.Array, dict]:
    """`n_jets` jets from one Pythia seeded with `seed` (one chunk, this process); and its stats
    (n_events, seconds, cpu_seconds: Pythia init included)."""
    share = _generate_share(cfg.validate(), n_jets, seed)
    stats = {k: share.pop(k) for k in _SHARE_STATS}
    counts = share.pop("counts")
    return make_jets(counts, **share, max_constituents=cfg.max_constituents), stats


def generate_jets(
    n_jets: int,
    *,
    seed: int = 0,
    workers: int = 1,
    cfg: PythiaConfig | None = None,
    chunk_jets: int | None = None,
    progress: bool | None = None,
    stats: dict | None = None,
) -> ak.Array:
    """Generate `n_jets` QCD jets (see PythiaConfig) in memory, chunk by chunk on `workers`
    processes; deterministic in (cfg, n_jets, seed, chunk_jets), whatever `workers` is.
    chunk_jets None: the dataset default (`DEFAULT_CHUNK_JETS`). progress: a
    line per finished chunk (None: only on a TTY). If `stats` is a dict it receives n_events,
    wall_s, worker_s and worker_cpu_s (summed over chunks, Pythia init included) and
    jets_per_s_per_core (jets per CPU-second of a worker, so a busy machine does not skew it)."""
    from scaling_sweeper.data.tasks import ChunkProgress, run_tasks

    cfg = (cfg or PythiaConfig()).validate()
    if n_jets < 1:
        raise ConfigError(f"n_jets must be >= 1, got {n_jets}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    quotas = chunk_quotas(n_jets, chunk_jets or DEFAULT_CHUNK_JETS)
    t0 = time.perf_counter()
    tasks = [(cfg, k, chunk_seed(seed, i)) for i, k in enumerate(quotas)]
    prog = ChunkProgress(len(tasks), n_jets, "pythia8 jets", enabled=progress)
    results = run_tasks(generate_chunk, tasks, workers=workers, on_done=lambda i, r: prog.done(quotas[i]))
    wall = time.perf_counter() - t0
    if stats is not None:
        cpu_s = sum(r[1]["cpu_seconds"] for r in results)
        stats.update(
            n_events=sum(r[1]["n_events"] for r in results),
            wall_s=wall,
            worker_s=sum(r[1]["seconds"] for r in results),
            worker_cpu_s=cpu_s,
            jets_per_s_per_core=n_jets / cpu_s if cpu_s > 0 else float("nan"),
            config=asdict(cfg),
        )
    jets = [r[0] for r in results]
    return ak.concatenate(jets) if len(jets) > 1 else jets[0]
