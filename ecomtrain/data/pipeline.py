"""Ray Data pipeline of a trial: read -> parse -> split -> tokenise -> deal one share per rank.

Before a run, `scan_corpus` counts every file's records in Ray tasks (cached on disk): bad
records up to `data.max_bad_fraction` go to the rejects file, more stop the run; the
per-task counts set the mixture. The pipeline then parses the files again inside Ray tasks
(never on the driver), keeps the trial's tasks, holds out a fixed per-task split (by a
hash of the normalised input, so it never changes between trials), drops training records
that overlap the `data.decontaminate` files or are of another provenance than
`data.provenance` asks for, keeps out-of-domain tasks for training only (and only with
`data.ood_fraction`), tokenises the rest once and deals them at random (with the data seed)
into one share per rank (`deal`), computed once into the object store.
Each rank then resamples, shuffles and packs its own share anew every epoch
(ecomtrain.data.share).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import ray
from ray.data.block import BlockAccessor

from ecomtrain.config import Config, ConfigError, DataConfig, named_tasks
from ecomtrain.data.mixture import multiplicities, stats
from ecomtrain.data.overlap import Decontaminator
from ecomtrain.data.packing import Prompt, tokenize_records
from ecomtrain.data.records import Bad, CorpusError
from ecomtrain.data.scan import corpus_files, corpus_scan, eval_index, parse_file, split_count
from ecomtrain.experts import ROUTE_KEYS, ROUTED_SHAPES, expert_ranks, route_label
from ecomtrain.tasks import CAPABILITIES, FAMILIES, LABELS, OOD, UNKNOWN, expand

log = logging.getLogger(__name__)

# Data tasks are light; a fractional CPU lets them run beside trainers holding whole CPUs.
SMALL_TASK = {"num_cpus": 0.25}


def _rows(row: dict, cfg: DataConfig, index: Decontaminator | None) -> list[dict]:
    # Bad records were counted (and written to the rejects file) by the scan before the run.
    return [r for r in parse_file(row["path"], row["bytes"], cfg, index) if isinstance(r, dict)]


def read_corpus(cfg: DataConfig, index: Decontaminator | None = None) -> ray.data.Dataset:
    """Every valid record of the configured corpus files as a Ray Dataset of string rows."""
    paths = corpus_files(cfg)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar per operator per worker floods trial logs
    context.execution_options.preserve_order = True  # same seed, same stream (loop.striped)
    files = ray.data.read_binary_files(paths, include_paths=True, **SMALL_TASK)
    return files.flat_map(_rows, fn_kwargs={"cfg": cfg, "index": index}, **SMALL_TASK)


def task_split(cfg: Config, tasks: list[str], index: Decontaminator | None = None) -> tuple:
    """(train, eval): train on `tasks` (every e-commerce task if empty), the out-of-domain
    ones when `data.ood_fraction` > 0, records of `data.provenance`; evaluate on
    `cfg.eval.tasks` (every e-commerce task if empty), records of `eval.provenance`.

    Every trial of a sweep scores on the same held-out records whatever it trains on,
    so trials are comparable and unseen tasks show what diversity buys.
    """
    ds = read_corpus(cfg.data, index)
    keep = set(expand(tasks))
    ood, provenance = cfg.data.ood_fraction > 0, cfg.data.provenance

    def trained(r: dict) -> bool:
        if r["split"] != "train" or provenance not in ("both", r["provenance"]):
            return False
        return ood if r["capability"] == OOD else not keep or r["task_family"] in keep

    def scored(r: dict) -> bool:
        return (
            r["split"] == "eval"
            and r["capability"] != OOD
            and cfg.eval.provenance in ("both", r["provenance"])
        )

    train = ds.filter(trained, **SMALL_TASK)
    return train, _keep(ds.filter(scored, **SMALL_TASK), cfg.eval.tasks)


def _keep(ds: ray.data.Dataset, tasks: list[str]) -> ray.data.Dataset:
    if not tasks:
        return ds
    keep = set(expand(tasks))
    return ds.filter(lambda r: r["task_family"] in keep, **SMALL_TASK)


def train_counts(scan: dict, tasks: list[str], cfg: DataConfig) -> dict[str, int]:
    """Training records of `data.provenance` per task of the trial: `tasks` (every
    e-commerce task in the corpus when empty), then the out-of-domain tasks when
    `data.ood_fraction` > 0."""
    ood = [t for t, c in scan["capabilities"].items() if c == OOD]
    names = [t for t in (expand(tasks) if tasks else scan["tasks"]) if t not in ood]
    names += ood if cfg.ood_fraction > 0 else []
    return {t: split_count(scan["tasks"].get(t, {}), "train", cfg.provenance) for t in names}


def corpus_tasks(scan: dict) -> list[str]:
    """Every e-commerce task of a corpus scan: built-in families, then tasks of the user's own."""
    return [t for t in scan["tasks"] if scan["capabilities"].get(t) != OOD]


def check_names(cfg: Config, source: str) -> None:
    """Every name in the config that is no built-in family or capability is a task of the
    user's own that the corpus holds, and an out-of-domain share (data.ood_fraction, or its
    values in sweep.params) has out-of-domain tasks to draw from. Scans the corpus (without
    Ray, cached) only when the config names such a task or share."""
    own = [(w, n) for w, n in named_tasks(cfg) if n not in FAMILIES and n not in CAPABILITIES]
    fractions = [cfg.data.ood_fraction, *cfg.sweep.params.get("data.ood_fraction", [])]
    if not own and not any(fractions):
        return
    scan = corpus_scan(cfg.data, use_ray=False)
    if any(fractions) and OOD not in scan["capabilities"].values():
        raise ConfigError(
            f"{source}: data.ood_fraction: {max(fractions)} of each epoch would be out of "
            "domain, but the corpus holds no out-of-domain task: add the built-in one "
            "(data.corpus: [..., ood]) or label files (data.file_capabilities {<file>: ood})"
        )
    for where, name in own:
        if name not in scan["tasks"]:
            mine = [t for t in scan["tasks"] if t not in FAMILIES]
            raise ConfigError(
                f"{source}: {where}: unknown task {name!r}: no built-in family or capability "
                f"has that name, nor does any task of the corpus (capabilities: "
                f"{', '.join(CAPABILITIES)}; families: ecomtrain/tasks.py; the corpus' own "
                f"tasks: {', '.join(mine[:10]) or 'none'})"
            )


def unknown_capability(path: str, capabilities: dict[str, str]) -> str:
    """What to set when a file's tasks of the user's own name no capability ("" if none)."""
    tasks = [t for t, c in capabilities.items() if c == UNKNOWN]
    if not tasks:
        return ""
    return (
        f"{path}: capability unknown for {', '.join(tasks)}: set data.file_capabilities "
        f"({Path(path).name!r}: <capability>) or a capability field in the records; "
        f"capabilities: {', '.join(CAPABILITIES)}"
    )


def check_scan(scan: dict, cfg: DataConfig) -> str:
    """Stop the run when bad records exceed `max_bad_fraction`; else write them to the
    rejects file. Returns the one-line summary the run logs."""
    bad, total = scan["bad"], max(scan["records"], 1)
    rejects = [r for f in scan["files"] for r in f["rejects"]]
    if scan["fatal"] or bad / total > cfg.max_bad_fraction:
        shown = "\n".join(str(Bad(**r)) for r in rejects[:50])
        more = f"\n... and {bad - 50} more" if bad > 50 else ""
        why = "a file cannot be read to its end" if scan["fatal"] else "too many bad records"
        raise CorpusError(
            f"{why}: {bad} of {scan['records']} records are bad "
            f"(data.max_bad_fraction={cfg.max_bad_fraction}):\n{shown}{more}"
        )
    if rejects:
        Path(cfg.rejects).parent.mkdir(parents=True, exist_ok=True)
        with open(cfg.rejects, "w", encoding="utf-8") as f:
            for r in rejects:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    held = sum(t["eval"] for t in scan["tasks"].values())
    exact = sum(t["exact"] for t in scan["tasks"].values())
    ngram = sum(t["ngram"] for t in scan["tasks"].values())
    where = f" (written to {Path(cfg.rejects).resolve()})" if rejects else ""
    for f in scan["files"]:
        if hint := unknown_capability(f["path"], f["capabilities"]):
            log.warning("data: %s", hint)
        if f["duplicates"]:
            log.warning(
                "data: %s: %d exact duplicate record(s), trained on as often as they appear "
                "and scored once if held out (first: %s)",
                f["path"],
                f["duplicates"],
                f["duplicate_example"],
            )
    return (
        f"data: {scan['records']} records in {len(scan['files'])} files; bad {bad}{where}; "
        f"exact duplicates {scan['duplicates']}; held out {held}; dropped as overlapping eval "
        f"files: exact {exact}, ngram {ngram}"
    )


def checked_scan(cfg: DataConfig) -> dict:
    """The corpus scan (data.scan.corpus_scan), checked and logged (`check_scan`)."""
    scan = corpus_scan(cfg)
    log.info(check_scan(scan, cfg))
    return scan


def mixture_stats(cfg: Config, tasks: list[str], scan: dict) -> dict:
    """Diversity statistics of a trial's mixture (flat, JSON-able; see mixture.stats) plus
    the corpus' bad and decontaminated record counts (`scan`: the corpus scan)."""
    counts = train_counts(scan, tasks, cfg.data)
    out = stats(counts, cfg.data, scan["capabilities"])
    out["bad_records"] = scan["bad"]
    for kind in ("exact", "ngram"):
        out[f"decontaminated/{kind}"] = sum(scan["tasks"].get(t, {}).get(kind, 0) for t in counts)
    return out


def route_table(cfg: Config, tasks: list[str], scan: dict) -> dict | None:
    """The experts of a label-routed adapter (`lora.shape` per-capability or per-task): one
    per capability (task) the trial trains on, in canonical order, and the expert of every
    corpus task that has one (`scan`: the corpus scan); None for the other shapes. A rank
    the experts of a routed shape cannot split (lora.match_params) is refused here, before
    any worker starts."""
    key = ROUTE_KEYS.get(cfg.lora.shape)
    if key is None:
        if cfg.lora.shape in ROUTED_SHAPES:  # moe
            expert_ranks(cfg.lora.rank, cfg.lora.experts, cfg.lora.match_params)
        return None
    capabilities = scan["capabilities"]

    def label(task: str) -> str:
        return route_label(
            key, {"capability": capabilities.get(task, UNKNOWN), "task_family": task}
        )

    trained = [t for t, n in train_counts(scan, tasks, cfg.data).items() if n > 0]
    names = list(dict.fromkeys(label(t) for t in trained))
    if key == "capability":
        names.sort(key=lambda c: LABELS.index(c) if c in LABELS else len(LABELS))
    of_family = {t: names.index(label(t)) for t in scan["tasks"] if label(t) in names}
    expert_ranks(cfg.lora.rank, len(names), cfg.lora.match_params)
    return {"names": names, "of_family": of_family}


def train_dataset(
    cfg: Config, model_path: str, tasks: list[str], n_shares: int, scan: dict
) -> tuple:
    """(one tokenised share of the training records per rank, the mixture's multiplicity
    per task) for one trial, from its corpus `scan` (checked: `check_scan`). Its held-out
    sample: evaluate.held_out."""
    index = eval_index(cfg.data)
    counts = train_counts(scan, tasks, cfg.data)
    missing = [t for t, n in counts.items() if n == 0]
    if missing and (tasks or cfg.data.provenance != "both"):
        log.warning("data: no training records for %s", ", ".join(missing))
    budget = cfg.data.max_per_task
    if cfg.data.provenance != "both" and budget:
        short = [f"{t} ({n})" for t, n in counts.items() if 0 < n < budget]
        if short:
            log.warning(
                "data: provenance %s: under data.max_per_task=%d training records for %s: "
                "their budget is not equal across provenances",
                cfg.data.provenance,
                budget,
                ", ".join(short),
            )
    ood = [t for t, c in scan["capabilities"].items() if c == OOD]
    if ood and cfg.data.ood_fraction == 0:
        log.info("data: out-of-domain tasks %s not trained on (data.ood_fraction 0)", ood)
    mult = multiplicities(counts, cfg.data, scan["capabilities"])
    train, _ = task_split(cfg, tasks, index)
    tokens = train.map_batches(
        tokenize_records,
        fn_kwargs={
            "model_path": model_path,
            "max_len": cfg.data.max_seq_len,
            "prompt": Prompt.of(cfg),
        },
        **SMALL_TASK,
    )
    shares, n, truncated = deal(tokens, n_shares, cfg.data.seed)
    log.info(
        f"data: {n} training records of {len(counts)} tasks tokenised (prompt truncated "
        f"{truncated}, dropped as too long {sum(counts.values()) - n}); {n_shares} shares of "
        f"{n // n_shares}-{-(-n // n_shares)} records, packed anew by each rank every epoch"
    )
    return shares, mult


# SPREAD, as Ray Data schedules its own tasks: with no strategy a task started inside a Tune
# trial would be placed in the trial's placement group, which has no room for it.
@ray.remote(**SMALL_TASK, scheduling_strategy="SPREAD")
def _deal_block(block, counts: list[int], seed: int, index: int):
    """A block's records in a random order (seeded by the data seed and the block's index),
    cut into one piece per share of `counts` records each, and its truncated prompts."""
    rows = BlockAccessor.for_block(block)
    order = np.random.default_rng([seed, index]).permutation(rows.num_rows())
    pieces = [rows.take(part) for part in np.split(order, np.cumsum(counts)[:-1])]
    return *pieces, int(np.sum(rows.to_numpy("truncated")))


def deal(
    tokens: ray.data.Dataset, n_shares: int, seed: int
) -> tuple[list[ray.data.Dataset], int, int]:
    """(one share per rank, records, truncated prompts): a uniformly random partition of the
    tokenised records into `n_shares` shares of equal size (to one record), without an
    all-to-all shuffle. The driver draws how many of each block's records go to each share
    (a multivariate hypergeometric draw, so every partition of that size is equally likely);
    a task per block shuffles its own records and cuts them into those pieces, and the block
    is freed once it is dealt. Each task holds one block and the driver blocks x shares
    counts, so memory stays flat in the corpus size (Ray's random_shuffle cuts every block
    into a piece per block; both measured in docs/benchmarks.md, "corpus"). Each rank
    shuffles its share anew every epoch (ecomtrain.data.share), so the order inside a share
    does not matter."""
    bundles = tokens.iter_internal_ref_bundles()
    blocks = [(b.ref, b.metadata.num_rows) for bundle in bundles for b in bundle.blocks]
    n = sum(rows for _, rows in blocks)
    if n < n_shares:
        raise CorpusError(
            f"data: {n} training records cannot give each of {n_shares} workers a share "
            "(every record was dropped, or too few records for train.num_workers)"
        )
    left = np.diff([round(r * n / n_shares) for r in range(n_shares + 1)])  # what each share takes
    rng = np.random.default_rng(seed)
    pieces, truncated = [], []
    for index, (block, rows) in enumerate(blocks):
        if rows:
            take = rng.multivariate_hypergeometric(left, rows)
            left -= take
            dealt = _deal_block.options(num_returns=n_shares + 1)
            *got, flags = dealt.remote(block, take.tolist(), seed, index)
            pieces.append(got)
            truncated.append(flags)
    del blocks, block  # each block is freed once its task has dealt it
    shares = [ray.data.from_arrow_refs([p[w] for p in pieces]) for w in range(n_shares)]
    return shares, n, sum(ray.get(truncated))
