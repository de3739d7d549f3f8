"""A rank's share of a trial's training records, and the endless stream it trains on.

The driver tokenises a trial's training records once, shuffles them with the data seed and
cuts them into one share per rank (ecomtrain.data.pipeline); a rank reads only its own
share, so the data work per rank falls as 1 / world size. From its share a rank makes an
endless, deterministic stream of packed micro-batches, epoch after epoch:

1. resample each task to the mixture, reseeded by the epoch (ecomtrain.data.mixture.copies:
   every epoch keeps another part of a downsampled task, and every record comes round);
2. shuffle the epoch's records with (seed, epoch, rank);
3. pack them first-fit-decreasing, `data.pack_window` records at a time, into rows of
   `data.max_seq_len` tokens;
4. deal the rows out in micro-batches of `train.micro_batch_size` rows. Rows run on from
   one epoch into the next, so no record or row is ever dropped at an epoch's end, and
   every rank has the same number of steps however its share packs.

Resuming skips exactly the micro-batches already trained on: the stream is a function of
(share, seed, rank) alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ecomtrain.config import Config
from ecomtrain.data.mixture import copies, positions
from ecomtrain.data.packing import IGNORE, layout, pack


@dataclass
class Share:
    """The tokenised training records one rank holds."""

    ids: list[np.ndarray]  # prompt + answer token ids of each record
    n_prompt: np.ndarray  # prompt tokens of each record (masked from the loss)
    family: list[str]
    source: list[str]


@dataclass
class StreamStats:
    """What a rank's stream has yielded so far."""

    epochs: int = 0  # epochs begun
    records: int = 0  # records packed into rows (with their resampled copies)
    rows: int = 0
    tokens: int = 0  # real tokens in those rows
    max_len: int = 1
    per_epoch: list[int] = field(default_factory=list)  # records of each epoch begun

    @property
    def packing_efficiency(self) -> float:
        return self.tokens / max(1, self.rows * self.max_len)


def read_share(batches: Iterator[dict]) -> Share:
    """A share from the batches of its dataset (ecomtrain.data.packing.tokenize_records)."""
    share = Share([], np.zeros(0, np.int64), [], [])
    n_prompt = []
    for b in batches:
        share.ids += [np.asarray(x, dtype=np.int64) for x in b["ids"]]
        n_prompt += list(b["n_prompt"])
        share.family += [str(x) for x in b["task_family"]]
        share.source += [str(x) for x in b["source"]]
    share.n_prompt = np.asarray(n_prompt, dtype=np.int64)
    return share


def epoch_order(
    share: Share, mult: dict[str, float], seed: int, epoch: int, rank: int, fixed: bool = False
):
    """Record indices of one epoch: each record as often as the mixture says, shuffled.
    `fixed` (data.downsample): the records kept are epoch 0's in every epoch."""
    reps = np.zeros(len(share.source), dtype=np.int64)
    for family in dict.fromkeys(share.family):
        members = [i for i, f in enumerate(share.family) if f == family]
        u = positions([share.source[i] for i in members], seed)
        for i, position in zip(members, u, strict=True):
            reps[i] = copies(position, mult.get(family, 0.0), 0 if fixed else epoch)
    order = np.repeat(np.arange(len(reps)), reps)
    np.random.default_rng([seed, epoch, rank]).shuffle(order)
    return order


def stream(
    share: Share,
    cfg: Config,
    mult: dict[str, float],
    rank: int,
    skip: int = 0,
    stats: StreamStats | None = None,
    pad: int = 0,
) -> Iterator[dict]:
    """Endless packed micro-batches of a share (numpy): input_ids, labels, segment_ids
    [micro_batch_size, max_seq_len], and `records`, the share's index of each record in it.
    The first `skip` micro-batches are passed over (packed, not laid out)."""
    if not share.ids:
        raise ValueError(f"rank {rank}: its share of the training records is empty")
    d, size = cfg.data, cfg.train.micro_batch_size
    stats = stats if stats is not None else StreamStats()
    stats.max_len = d.max_seq_len
    pending: list[list[int]] = []  # rows (record indices) not yet dealt out
    seen = 0
    for epoch in range(2**62):
        order = epoch_order(share, mult, d.seed, epoch, rank, d.downsample == "fixed")
        stats.epochs, stats.per_epoch = epoch + 1, stats.per_epoch + [len(order)]
        for start in range(0, len(order), d.pack_window):
            window = order[start : start + d.pack_window]
            rows = pack([len(share.ids[i]) for i in window], d.max_seq_len)
            pending += [[int(window[j]) for j in row] for row in rows]
            stats.records += len(window)
            stats.rows += len(rows)
            stats.tokens += sum(len(share.ids[i]) for i in window)
            while len(pending) >= size:
                rows, pending = pending[:size], pending[size:]
                if seen >= skip:
                    yield micro_batch(share, rows, d.max_seq_len, pad)
                seen += 1


def micro_batch(share: Share, rows: list[list[int]], max_len: int, pad: int) -> dict:
    """Rows of record indices laid out as model-ready arrays."""
    members = [i for row in rows for i in row]
    seqs = []
    for i in members:
        ids, n = share.ids[i], int(share.n_prompt[i])
        seqs.append((ids, np.concatenate([np.full(n, IGNORE), ids[n:]])))
    spans, k = [], 0
    for row in rows:
        spans.append(list(range(k, k + len(row))))
        k += len(row)
    out = layout(seqs, max_len, pad, rows=spans)
    return {
        "input_ids": out["input_ids"],
        "labels": out["labels"],
        "segment_ids": out["segment_ids"],
        "records": np.asarray(members, dtype=np.int64),
    }
