"""What a sweep will be able to see, before it runs: `python -m ecomtrain.sweep --plan`.

For the held-out sample the config gives (its sizes from the corpus scan, as `--dry-run` gets
them), the seeds and a noise model, the minimum detectable effect (MDE) at 80 % power of the
report's 95 % intervals for: one cell against another (overall score), one task's difference
(the smallest task), the diversity x capacity interaction b3, and the selected best against
the runner-up on the confirmation records; with `eval.target_mde`, the seeds or held-out
records that reach it for a cell against a cell.

The noise model (docs/statistics-method.md, "Planning"): a contrast theta = sum_t w_t S_t of
trial scores (weights summing to 0) has variance

    sum_t w_t^2 * (seed_sd^2 + (1 - rho) * record_sd^2 * sum_k c_k^2 / n_k)

with c_k a task's weight in the score (ShopBench: tasks into tracks, tracks into the score),
n_k its records, record_sd the SD of one record's score and rho the correlation of two
adapters' scores on the same record (paired differences cancel that share). From the config
alone: record_sd 0.5, the most any score in [0, 1] can have, and rho 0 (an upper bound on the
MDE); from an earlier sweep's analysis.json: its measured figures. The test is Student's t
on the sweep's seed degrees of freedom (cells x (seeds - 1); none: normal), its power from
the noncentral t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from scipy import optimize, stats

from ecomtrain.config import Config
from ecomtrain.data.scan import corpus_scan, split_count
from ecomtrain.evaluate.held_out import held_out_sizes
from ecomtrain.evaluate.metrics import task_weights
from ecomtrain.report import findings, statistics
from ecomtrain.report.analysis import capacity, interaction_weights
from ecomtrain.tasks import OOD, expand

POWER = 0.8
MAX_SEEDS = 64


@dataclass
class Noise:
    """What a plan assumes moves a trial's score, and where it comes from."""

    seed_sd: float  # training noise of the overall score
    task_seed_sd: float  # of one task's score
    record_sd: float  # SD of one record's score
    correlation: float  # of two adapters' scores on the same record
    source: str


def noise_of(cfg: Config, analysis: findings.Analysis | None = None, where: str = "") -> Noise:
    """The noise to plan with: an earlier sweep's measured figures, else the config's seed
    SD (eval.seed_sd, also taken for one task's score) with the worst-case record noise."""
    if analysis is not None:
        n = analysis.noise
        return Noise(
            n.seed_sd,
            n.task_seed_sd or n.seed_sd,
            n.record_sd,
            n.correlation,
            f"measured in {where}",
        )
    source = (
        "eval.seed_sd for the overall and for one task's score; record noise at its worst "
        "case (per-record SD 0.5, no correlation between adapters): the MDEs are upper bounds"
    )
    return Noise(cfg.eval.seed_sd, cfg.eval.seed_sd, 0.5, 0.0, source)


def record_var(sizes: dict[str, float], tracks: dict[str, str], noise: Noise) -> float:
    """The record-noise variance of one trial's overall score that a paired contrast keeps,
    per unit of sum_t w_t^2: (1 - rho) record_sd^2 sum_k c_k^2 / n_k."""
    c = task_weights(tracks)
    spread = sum(c[t] ** 2 / n for t, n in sizes.items())
    return (1 - noise.correlation) * noise.record_sd**2 * spread


def mde(se: float, df: float, power: float = POWER) -> float:
    """The smallest true difference that a two-sided 95 % t interval on `df` degrees of
    freedom (inf: normal) excludes 0 for with probability `power`, when its SE is `se`."""
    if se <= 0:
        return 0.0
    q = float(statistics.quantile(df))

    def found(d: float) -> float:
        nc = d / se
        if math.isinf(df):
            return stats.norm.sf(q - nc) + stats.norm.cdf(-q - nc) - power
        below = stats.nct.cdf(-q, df, nc)  # NaN far out in its tail, where it is 0
        return stats.nct.sf(q, df, nc) + (0.0 if math.isnan(below) else below) - power

    return float(optimize.brentq(found, 0.0, 50 * se))


@dataclass
class Plan:
    cells: int
    seeds: int
    sizes: dict[str, int]  # held-out records per task, both parts
    tracks: dict[str, str]
    confirm_fraction: float
    noise: Noise
    cell_vs_cell: float
    task: tuple[str, float] | None  # (the smallest task, its MDE)
    interaction: float | None  # None: b3 not identifiable from the grid
    interaction_axes: str
    best_vs_runner_up: float | None  # None: no confirmation sample
    target: float
    seeds_needed: int | None  # None: no target, or more than MAX_SEEDS
    records_scale: float | None  # held-out records x this reach the target at `seeds`

    @property
    def df(self) -> float:
        """The seed degrees of freedom of the sweep's intervals (inf: one seed per cell)."""
        return self.cells * (self.seeds - 1) or math.inf


def contrast_mde(
    w2: float, seed_sd: float, sizes: dict, tracks: dict, noise: Noise, df: float
) -> float:
    """The MDE of a contrast with sum of squared weights `w2` over the trials."""
    return mde(math.sqrt(w2 * (seed_sd**2 + record_var(sizes, tracks, noise))), df)


def make_plan(
    cfg: Config, points: list[dict], sizes: dict[str, int], tracks: dict[str, str], noise: Noise
) -> Plan:
    """The plan of a sweep of grid `points` (tuning.space.grid_points: one per cell and
    seed) on held-out `sizes` per task."""
    seeds = max(1, len(cfg.sweep.seeds))
    cells = max(1, len(points) // seeds)
    df = cells * (seeds - 1) or math.inf
    f = cfg.eval.confirm_fraction
    select = {t: n * (1 - f) for t, n in sizes.items()}
    pair = 2 / seeds  # sum of squared weights of a difference of two cell means

    def cell_mde(k: int, scale: float = 1.0, part: dict = select) -> float:
        scaled = {t: n * scale for t, n in part.items()}
        return contrast_mde(
            2 / k, noise.seed_sd, scaled, tracks, noise, cells * (k - 1) or math.inf
        )

    smallest = min(select, key=select.get) if select else None
    task = None
    if smallest is not None:
        one = Noise(noise.task_seed_sd, noise.task_seed_sd, noise.record_sd, noise.correlation, "")
        task = (smallest, contrast_mde(pair, one.seed_sd, {smallest: select[smallest]}, {smallest: "x"}, one, df))  # fmt: skip
    rows = [{"n_capabilities": p["subset"]["n_capabilities"], "rank": p["rank"]} for p in points]
    w = interaction_weights(rows, "n_capabilities") if rows else None
    inter = None
    if w is not None:
        inter = contrast_mde(float(w @ w), noise.seed_sd, select, tracks, noise, df)
    confirm = {t: n * f for t, n in sizes.items()}
    best = cell_mde(seeds, part=confirm) if f > 0 else None
    seeds_needed = scale = None
    target = cfg.eval.target_mde
    if target > 0:
        seeds_needed = next((k for k in range(1, MAX_SEEDS + 1) if cell_mde(k) <= target), None)
        if cell_mde(seeds, 1e9) < target:  # records alone can get there at these seeds
            scale = float(optimize.brentq(lambda s: cell_mde(seeds, s) - target, 1e-6, 1e9))
    return Plan(
        cells=cells,
        seeds=seeds,
        sizes=sizes,
        tracks=tracks,
        confirm_fraction=f,
        noise=noise,
        cell_vs_cell=cell_mde(seeds),
        task=task,
        interaction=inter,
        interaction_axes=f"n_capabilities x {capacity(rows)[0] if rows else 'log2(rank)'}",
        best_vs_runner_up=best,
        target=target,
        seeds_needed=seeds_needed,
        records_scale=scale,
    )


def held_out_plan_sizes(cfg: Config) -> tuple[dict[str, int], dict[str, str]]:
    """Held-out records per task that every trial will be scored on (the corpus scan, as
    `sweep --dry-run` reads it, sized by evaluate.held_out.held_out_sizes), and each task's
    track."""
    scan = corpus_scan(cfg.data, use_ray=False)
    keep = set(expand(cfg.eval.tasks)) if cfg.eval.tasks else None
    tracks = {
        t: scan["capabilities"][t]
        for t in scan["tasks"]
        if scan["capabilities"][t] != OOD and (keep is None or t in keep)
    }
    available = {t: split_count(scan["tasks"][t], "eval", cfg.eval.provenance) for t in tracks}
    available = {t: n for t, n in available.items() if n > 0}
    tracks = {t: tracks[t] for t in available}
    sizes, _ = held_out_sizes(available, tracks, cfg)
    return sizes, tracks


def plan(cfg: Config, points: list[dict], noise_from: str | None = None) -> str:
    """`sweep --plan`: the plan of the configured sweep as text. `noise_from`: an earlier
    sweep's output folder or analysis.json to take the noise from."""
    analysis = findings.read(Path(noise_from)) if noise_from else None
    if noise_from and analysis is None:
        raise FileNotFoundError(f"{noise_from}: no analysis.json there (a sweep's output?)")
    sizes, tracks = held_out_plan_sizes(cfg)
    if not sizes:
        raise ValueError("the corpus holds no held-out records to plan with")
    return plan_text(make_plan(cfg, points, sizes, tracks, noise_of(cfg, analysis, noise_from)))


def plan_text(p: Plan) -> str:
    f, total = p.confirm_fraction, sum(p.sizes.values())
    df = "none: one seed per cell" if math.isinf(p.df) else f"{p.df:g}"
    n = p.noise
    lines = [
        f"plan: {p.cells} cell(s) x {p.seeds} seed(s) (seed degrees of freedom {df}); "
        f"{total} held-out records over {len(p.sizes)} tasks, about {total * (1 - f):.0f} "
        f"to rank trials on and {total * f:.0f} to confirm the best (eval.confirm_fraction {f})",
        f"noise: seed SD {n.seed_sd:.4f} (one task's {n.task_seed_sd:.4f}), per-record SD "
        f"{n.record_sd:.3f}, correlation of two adapters on a record {n.correlation:.2f}; "
        f"{n.source}",
    ]
    if n.seed_sd == 0 and p.seeds > 1:
        lines.append(
            "  seed SD 0: training noise not counted (set eval.seed_sd, or --noise-from an "
            "earlier sweep's output)"
        )
    lines.append(
        f"minimum detectable effect at {POWER * 100:.0f} % power of the report's 95 % "
        "intervals (above 1: none, scores lie in [0, 1]):"
    )
    lines.append(f"  cell vs cell (overall score):            {p.cell_vs_cell:.4f}")
    if p.task:
        name, value = p.task
        lines.append(f"  one task ({name}, {p.sizes[name] * (1 - f):.0f} records): {value:.4f}")
    inter = "not identifiable from this grid" if p.interaction is None else f"{p.interaction:.4f}"
    lines.append(f"  interaction b3 ({p.interaction_axes}, score per unit of both): {inter}")
    if p.best_vs_runner_up is not None:
        lines.append(f"  best vs runner-up (confirmation records): {p.best_vs_runner_up:.4f}")
    if p.target > 0:
        seeds = (
            f"{p.seeds_needed} seed(s) per cell at these held-out sizes"
            if p.seeds_needed
            else f"more than {MAX_SEEDS} seeds at these held-out sizes"
        )
        if p.records_scale is None:
            records = (
                f"no held-out size reaches it at {p.seeds} seed(s): their training noise "
                "alone is larger"
            )
        else:
            records = (
                f"{p.records_scale:.2f}x the held-out records at {p.seeds} seed(s) "
                f"(about {math.ceil(total * p.records_scale)})"
            )
        lines.append(
            f"target {p.target:g} (eval.target_mde) for cell vs cell: {seeds}; or {records}"
        )
    return "\n".join(lines)
