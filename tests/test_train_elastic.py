"""Elastic trials: a step trains on the same records at any world size (fast, no Ray).

A trial's records are cut into one share per worker of its largest world; fewer workers
deal the shares out (`loop.shares_of`) and pad to equal micro-batch counts with zero-weight
repeats. The whole run, shrinking and growing on a 3-node cluster, is in
tests/test_train_fault.py."""

from collections import Counter

import numpy as np
import pytest

from ecomtrain.config import Config, ConfigError, load_config
from ecomtrain.data.mixture import source_keys
from ecomtrain.data.share import Share, stream
from ecomtrain.train.loop import DIGEST_MOD, shares_of, step_batches

SHARES = 3  # train.num_workers: the largest world


def shares() -> list[Share]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(SHARES):
        n = 20 + i  # unequal shares
        ids = [rng.integers(5, 100, rng.integers(5, 40)).tolist() for _ in range(n)]
        family = ["query_ner" if k % 3 else "review_rating" for k in range(n)]
        out.append(Share.of(ids, [2] * n, family, source_keys([f"s{i}:{k}" for k in range(n)])))
    return out


def config() -> Config:
    cfg = Config()
    cfg.data.max_seq_len, cfg.data.pack_window = 64, 16
    cfg.train.num_workers, cfg.train.micro_batch_size, cfg.train.grad_accum = SHARES, 2, 2
    return cfg


def run(world: int, steps: range, skip: int = 0) -> list[dict]:
    """Per step, over all ranks: the keys of the records trained (weight-1 micro-batches,
    counted as they leave the streams), the ledger, the dropout seeds and each rank's
    micro-batch weights. `skip`: micro-batches each stream already gave (a resume)."""
    cfg, data = config(), shares()
    mult = {"query_ner": 1.0, "review_rating": 1.0}
    per_rank = -(-SHARES // world) * cfg.train.grad_accum
    keys: Counter = Counter()

    def counted(share, batches):
        for batch in batches:
            keys.update(share.key[batch["records"]].tolist())
            yield batch

    ranks = [
        [(i, data[i], counted(data[i], stream(data[i], cfg, mult, i, skip))) for i in mine]
        for mine in (shares_of(rank, world, SHARES) for rank in range(world))
    ]
    out = []
    for step in steps:
        keys.clear()
        got = {"weights": [], "ledger": [0, 0], "seeds": set()}
        for streams in ranks:
            micro, ledger = step_batches(streams, cfg, step, None, per_rank)
            assert len(micro) == per_rank  # every rank runs as many (DeepSpeed's collectives)
            got["weights"].append([m.weight for m in micro])
            got["ledger"] = [a + b for a, b in zip(got["ledger"], ledger, strict=True)]
            got["seeds"] |= {m.seed for m in micro if m.weight}
        got["ledger"][1] %= DIGEST_MOD
        out.append(got | {"keys": Counter(keys)})
    return out


def test_shares_are_dealt_round_robin():
    assert [shares_of(r, 1, 3) for r in range(1)] == [[0, 1, 2]]
    assert [shares_of(r, 2, 3) for r in range(2)] == [[0, 2], [1]]
    assert [shares_of(r, 3, 3) for r in range(3)] == [[0], [1], [2]]


@pytest.mark.parametrize("world", [1, 2])
def test_a_smaller_world_trains_the_same_records_each_step(world):
    """Across two epochs of every share: each step's records (as a multiset), its ledger
    and its dropout seeds are those of the full world; a rank with fewer shares pads with
    zero-weight micro-batches only."""
    a, b = run(SHARES, range(1, 13)), run(world, range(1, 13))
    assert sum(sum(s["keys"].values()) for s in a) > 2 * sum(len(s) for s in shares())
    for x, y in zip(a, b, strict=True):
        assert x["keys"] == y["keys"] and x["ledger"] == y["ledger"] and x["seeds"] == y["seeds"]
        assert x["ledger"][0] == sum(x["keys"].values())
        assert sum(w.count(1.0) for w in y["weights"]) == SHARES * config().train.grad_accum
    if world == 2:  # rank 1 holds one share of three: half its micro-batches are padding
        assert b[0]["weights"] == [[1.0] * 4, [1.0, 1.0, 0.0, 0.0]]


def test_a_resumed_smaller_world_continues_where_the_full_one_was():
    """A checkpoint at step 5 of the full world, resumed at world 1: steps 6-9 equal."""
    full = run(SHARES, range(1, 10))
    grad_accum = config().train.grad_accum
    resumed = run(1, range(6, 10), skip=5 * grad_accum)
    assert [s["ledger"] for s in resumed] == [s["ledger"] for s in full[5:]]
    assert [s["keys"] for s in resumed] == [s["keys"] for s in full[5:]]
    assert all(0 <= s["ledger"][1] < DIGEST_MOD and s["ledger"][0] > 0 for s in full)


def test_elastic_workers_are_read_from_min_max():
    cfg = load_config(None, ["train.num_workers=[1, 4]", "train.zero_stage=0"])
    assert (cfg.train.min_workers, cfg.train.num_workers, cfg.train.elastic) == (1, 4, True)
    assert not load_config(None, ["train.num_workers=3"]).train.elastic
    assert not load_config(None, ["train.num_workers=[2, 2]"]).train.elastic
    bad = {
        "train.num_workers=[3, 2]": "fewest workers must not exceed the most",
        "train.num_workers=[1, 2, 3]": r"expected a number of workers or \[min, max\]",
        "train.num_workers=[1, 2.5]": r"expected a number of workers or \[min, max\]",
        "train.num_workers=[0, 2]": r"expected a number of workers or \[min, max\]",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    for stage in (1, 2, 3):  # DeepSpeed reloads a ZeRO checkpoint at its own world size only
        with pytest.raises(ConfigError, match=f"needs train.zero_stage 0, not {stage}"):
            load_config(None, ["train.num_workers=[1, 2]", f"train.zero_stage={stage}"])
    with pytest.raises(ConfigError, match="both set the fewest workers"):
        load_config(None, ["train.num_workers=[1, 2]", "train.min_workers=1"])
