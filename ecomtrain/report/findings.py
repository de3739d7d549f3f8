"""What the analysis found, typed: built once by `analysis.analyze`, written to analysis.json
by `write` and read back by `read`. The pages, the charts and the W&B summary read it by
attribute.

analysis.json is these dataclasses as JSON objects, field by field: a cell's mean and
interval sit beside its name (`{"subset", "rank", "mean", "ci", ...}`), a comparison's
difference beside its sides (`{"a", "b", "kind", "diff", "ci", "clear", "adjusted", ...}`).
A `df` of null is a normal interval (held-out sampling only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ecomtrain.files import atomic_write

FILE = "analysis.json"


@dataclass(kw_only=True)
class Value:
    """A mean with its 95 % interval."""

    mean: float
    ci: tuple[float, float]
    se: float
    df: float | None = None  # None: a normal interval (held-out sampling only)


@dataclass(kw_only=True)
class Difference:
    """a - b (or a contrast) with its 95 % interval. `clear`: the interval excludes 0;
    `adjusted`: the verdict after the multiplicity adjustment of its family (`Analysis.
    adjustment`), None where it belongs to none."""

    diff: float
    ci: tuple[float, float]
    se: float
    df: float | None = None
    p: float = 1.0
    clear: bool = False
    adjusted: bool | None = None

    @property
    def better(self) -> int:
        """+1 where a is clearly better after adjustment, -1 where b is, 0 otherwise."""
        return 0 if not self.adjusted else (1 if self.diff > 0 else -1)


@dataclass(kw_only=True)
class Cell(Value):
    """A cell of the sweep (table line and rank): its mean over seeds, overall and per track."""

    subset: str
    rank: int
    n_seeds: int
    ladder_step: int | None = None
    n_capabilities: int | None = None
    tasks: list[str] = field(default_factory=list)
    tracks: dict[str, Value] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.subset} r{self.rank}"


@dataclass(kw_only=True)
class Comparison(Difference):
    """Cell a against cell b, overall (the fields of Difference) and per track and task."""

    a: str
    b: str
    kind: str  # "ladder step", "rank", a swept config path, or "best vs runner-up"
    tracks: dict[str, Difference | None] = field(default_factory=dict)
    tasks: dict[str, Difference | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class Interaction(Difference):
    """The diversity x capacity coefficient b3, from every trial."""

    diversity: str
    capacity: str


@dataclass(kw_only=True)
class LinePoint(Value):
    """The mean of the cells at one rank and number of capabilities (the diversity chart)."""

    rank: int
    n_capabilities: int
    cells: int


@dataclass(kw_only=True)
class Part(Value):
    """A cell's score on the tasks it trained on ("seen") or on the others ("unseen")."""

    subset: str
    rank: int
    part: str


@dataclass
class Noise:
    """What moves a trial's overall score on the selection records (also what `sweep --plan`
    can take from an earlier sweep)."""

    seed_sd: float  # training noise: the seed-to-seed SD (0 where the estimate came out <= 0)
    seed_var_raw: float  # the seed variance estimate before it is clipped at 0
    seed_df: int  # its degrees of freedom (0: one seed per cell, not in the intervals)
    task_seed_sd: float  # the median over tasks of a task score's seed SD
    record_se: float  # held-out sampling: median SE of one trial's score from its records
    record_sd: float  # the SD of one record's score that record_se implies
    correlation: float  # between two trials' record noise (paired differences shrink by it)


@dataclass
class Selected:
    """Claims about the selected best: the cell with the best mean on the selection records
    (what the sweep ranked trials on) and the best trial, tested on the confirmation records,
    which chose nothing. `confirmed` False: the sweep had no confirmation sample, and these
    rest on the records that chose the best (reported, never given a verdict)."""

    best: str
    chosen_mean: float  # its mean on the selection records: what chose it, biased upward
    runner_up: str | None
    confirmed: bool
    records: int  # the records the claims below rest on
    score: Value | None  # the best cell's mean there
    vs_runner_up: Comparison | None
    vs_baseline: Difference | None
    best_trial: str | None  # the best trial (its adapter is the sweep's best-adapter/)
    trial_score: Value | None  # its score there, held-out noise only: a claim about it alone


@dataclass
class Analysis:
    metric: str  # the objective the trials' score holds (trials.csv's `metric`)
    records: int  # held-out records every trial was scored on, both parts
    selection_records: int  # those the figures below rest on (trials are ranked on them)
    confirmation_records: int  # those kept for the claims about the selected best
    tasks: int
    bootstrap: int  # resamples
    adjustment: str  # the multiplicity adjustment behind `adjusted` (statistics.ADJUSTMENTS)
    noise: Noise
    cells: list[Cell]
    comparisons: list[Comparison]
    interaction: Interaction | None
    baseline: Value | None  # the untrained base model on the same records
    seen_unseen: list[Part]
    lines: list[LinePoint]
    selected: Selected | None
    notes: list[str] = field(default_factory=list)  # what the figures leave out, and why

    def cell(self, subset: str, rank: int) -> Cell | None:
        return next((c for c in self.cells if (c.subset, c.rank) == (subset, rank)), None)


def write(analysis: Analysis, folder: Path) -> Path:
    """analysis.json in `folder`."""
    return atomic_write(
        Path(folder) / FILE, json.dumps(dataclasses.asdict(analysis), indent=1) + "\n"
    )


def read(path: Path) -> Analysis | None:
    """The Analysis in an analysis.json (a file, or the folder holding it); None if absent."""
    path = Path(path)
    path = path / FILE if path.is_dir() else path
    if not path.is_file():
        return None
    try:
        return _build(Analysis, json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: not an analysis.json this version reads ({e})") from None


def _build(kind, data):
    """`data` (parsed JSON) as the type `kind`: dataclasses field by field, lists, dicts,
    tuples and optional values."""
    if data is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _build(next(a for a in args if a is not type(None)), data)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(
            **{f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(kind)}
        )
    if origin is list:
        return [_build(args[0], x) for x in data]
    if origin is dict:
        return {k: _build(args[1], v) for k, v in data.items()}
    if origin is tuple:
        return tuple(_build(a, x) for a, x in zip(args, data, strict=True))
    if kind is float:
        return float(data)
    return data


def finite(x: float) -> float | None:
    """A degrees-of-freedom figure as JSON holds it: None for infinity."""
    return None if math.isinf(x) else float(x)
