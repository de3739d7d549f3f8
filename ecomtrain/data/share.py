"""A rank's share of a trial's training records, and the endless stream it trains on.

The driver tokenises a trial's training records once and deals them at random (with the data
seed) into one share per rank (ecomtrain.data.pipeline); a rank reads only its own
share, so the data work per rank falls as 1 / world size. It holds the share in flat arrays
(`Share`: 4 bytes a token, 22 a record), so memory follows the share's tokens, not a
Python object per record. From its share a rank makes an endless, deterministic stream of
packed micro-batches, epoch after epoch:

1. resample each task to the mixture, reseeded by the epoch (ecomtrain.data.mixture.copies:
   every epoch keeps another part of a downsampled task, and every record comes round);
2. shuffle the epoch's records with (seed, epoch, rank);
3. pack them first-fit-decreasing, `data.pack_window` records at a time, into rows of
   `data.max_seq_len` tokens, and shuffle each window's rows (first-fit-decreasing makes
   them longest records first: unshuffled, the first steps of every window would train on
   long answers and its last ones on short, a cycle in what the optimizer sees);
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
import pyarrow as pa

from ecomtrain.config import Config
from ecomtrain.data.mixture import copies, positions
from ecomtrain.data.packing import IGNORE, layout, pack


@dataclass
class Share:
    """The tokenised training records one rank holds, in flat arrays: 4 bytes a token and
    22 a record, with no Python object per record, so a share of millions of records costs
    about its tokens' size."""

    tokens: np.ndarray  # int32: every record's prompt + answer ids, one after the other
    offsets: np.ndarray  # int64 [n + 1]: record i is tokens[offsets[i]:offsets[i + 1]]
    n_prompt: np.ndarray  # int32: prompt tokens of each record (masked from the loss)
    task: np.ndarray  # int16: each record's task family, an index into `tasks`
    tasks: list[str]  # the task families, in order of first appearance
    key: np.ndarray  # uint64: each record's source key (mixture.source_keys)

    @classmethod
    def of(cls, ids, n_prompt, family, key, tasks: list[str] | None = None) -> Share:
        """A share from per-record token ids, prompt lengths, task families and keys
        (`tasks`: a list the families' indices are taken from, extended as needed)."""
        tasks = [] if tasks is None else tasks
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        tokens = [np.asarray(x, dtype=np.int32) for x in ids]
        return cls(
            np.concatenate(tokens) if tokens else np.zeros(0, np.int32),
            _offsets(lengths),
            np.asarray(n_prompt, dtype=np.int32),
            _codes(family, tasks),
            tasks,
            np.asarray(key, dtype=np.uint64),
        )

    @classmethod
    def of_table(cls, table: pa.Table, tasks: list[str]) -> Share:
        """A share from an Arrow batch of ecomtrain.data.packing.tokenize_records' columns:
        the token ids straight from the list column's flat values and lengths."""
        ids = table.column("ids").combine_chunks()
        return cls(
            ids.flatten().to_numpy().astype(np.int32, copy=False),
            _offsets(ids.value_lengths().to_numpy()),
            table.column("n_prompt").to_numpy().astype(np.int32),
            _codes(table.column("task_family").to_pylist(), tasks),
            tasks,
            table.column("key").to_numpy().astype(np.uint64, copy=False),
        )

    @classmethod
    def concat(cls, parts: list[Share]) -> Share:
        """One share of `parts`' records, in order; their task indices must come from one
        list (`of`'s `tasks`). It empties `parts`, freeing each part once it is copied, so
        memory peaks at the share and one part, not twice the share."""
        if not parts:
            return cls.of([], [], [], [])
        n, size = sum(len(p) for p in parts), sum(len(p.tokens) for p in parts)
        whole = cls(
            np.empty(size, np.int32),
            np.empty(n + 1, np.int64),
            np.empty(n, np.int32),
            np.empty(n, np.int16),
            parts[-1].tasks,
            np.empty(n, np.uint64),
        )
        whole.offsets[0] = record = token = 0
        parts.reverse()
        while parts:
            part = parts.pop()
            end, stop = record + len(part), token + len(part.tokens)
            whole.tokens[token:stop] = part.tokens
            whole.offsets[record + 1 : end + 1] = part.offsets[1:] + token
            whole.n_prompt[record:end] = part.n_prompt
            whole.task[record:end] = part.task
            whole.key[record:end] = part.key
            record, token = end, stop
            del part
            pa.default_memory_pool().release_unused()  # a part may hold Arrow's memory
        return whole

    def __len__(self) -> int:
        return len(self.n_prompt)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def family(self, i: int) -> str:
        return self.tasks[self.task[i]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


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


def read_share(dataset, batch_size: int | None = None) -> Share:
    """A share from its dataset, or a rank's iterator of it (anything with Ray Data's
    `iter_batches`; ecomtrain.data.packing.tokenize_records' columns), with no Python object
    per record. By default it reads whole blocks and copies them once, into the share;
    re-batching them would copy every record into Arrow's memory pool first, which keeps
    what it frees (`python -m ecomtrain.bench corpus` measures a rank's memory)."""
    tasks: list[str] = []
    batches = dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow")
    return Share.concat([Share.of_table(table, tasks) for table in batches])


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Where each record starts in the flat tokens, and where the last ends."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _codes(family, tasks: list[str]) -> np.ndarray:
    """Each record's task family as an index into `tasks`, which is extended with the
    families it does not hold yet."""
    index = {t: i for i, t in enumerate(tasks)}
    codes = [index.setdefault(str(f), len(index)) for f in family]
    tasks += list(index)[len(tasks) :]
    return np.asarray(codes, dtype=np.int16)


def epoch_order(
    share: Share, mult: dict[str, float], seed: int, epoch: int, rank: int, fixed: bool = False
):
    """Record indices of one epoch: each record as often as the mixture says, shuffled.
    `fixed` (data.downsample): the records kept are epoch 0's in every epoch."""
    reps = np.zeros(len(share), dtype=np.int64)
    for code, family in enumerate(share.tasks):
        members = np.flatnonzero(share.task == code)
        u = positions(share.key[members], seed)
        reps[members] = copies(u, mult.get(family, 0.0), 0 if fixed else epoch)
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
    if not len(share):
        raise ValueError(f"rank {rank}: its share of the training records is empty")
    d, size = cfg.data, cfg.train.micro_batch_size
    stats = stats if stats is not None else StreamStats()
    stats.max_len = d.max_seq_len
    pending: list[list[int]] = []  # rows (record indices) not yet dealt out
    seen, all_lengths = 0, share.lengths
    for epoch in range(2**62):
        order = epoch_order(share, mult, d.seed, epoch, rank, d.downsample == "fixed")
        stats.epochs, stats.per_epoch = epoch + 1, stats.per_epoch + [len(order)]
        for start in range(0, len(order), d.pack_window):
            window = order[start : start + d.pack_window]
            lengths = all_lengths[window]
            rows = pack(lengths.tolist(), d.max_seq_len)
            shuffle = np.random.default_rng([d.seed, epoch, rank, start]).permutation(len(rows))
            rows = [rows[j] for j in shuffle]
            pending += [[int(window[j]) for j in row] for row in rows]
            stats.records += len(window)
            stats.rows += len(rows)
            stats.tokens += int(lengths.sum())
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
        ids, n = share.ids(i), int(share.n_prompt[i])
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
