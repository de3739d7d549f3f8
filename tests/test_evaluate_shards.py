"""In-loop evaluation on every rank: each rank answers its share of the batches and the
ranks exchange answers; the result equals one process's, bit for bit (CPU, gloo)."""

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config, DataConfig, ModelConfig
from ecomtrain.data.corpus import resolve_corpus
from ecomtrain.data.packing import Prompt
from ecomtrain.data.records import Bad
from ecomtrain.data.scan import parse_file
from ecomtrain.evaluate.answer import answer_losses, evaluate_rows, respond
from ecomtrain.model import load_model, load_tokenizer


def held_out_rows(n: int = 45) -> list[dict]:
    rows = []
    for path in resolve_corpus(["demo"]):
        rows += [r for r in parse_file(path, None, DataConfig(), None) if not isinstance(r, Bad)]
    return [r for r in rows if r["split"] == "eval"][:n]


def evaluate(share, rows, cfg):
    torch.set_num_threads(1)  # the same kernels' reduction order in every process
    path = resolve_model(cfg.model)
    metrics, entries = evaluate_rows(
        load_model(path), load_tokenizer(path), rows, cfg, ["query_ner"], share
    )
    metrics.pop("eval_s")
    return metrics, entries


def rank_fn(rank, world, port, rows, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = Config()
    cfg.eval.batch_size, cfg.eval.max_new_tokens = 4, 6
    result = evaluate((rank, world), rows, cfg)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def test_sharded_evaluation_equals_one_process(tmp_path):
    rows = held_out_rows()
    resolve_model(ModelConfig())  # built here: under a process group only rank 0 saves
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_fn, args=(2, port, rows, str(tmp_path)), nprocs=2)
    cfg = Config(model=ModelConfig())
    cfg.eval.batch_size, cfg.eval.max_new_tokens = 4, 6
    alone = json.loads(json.dumps(evaluate((0, 1), rows, cfg)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == alone  # every rank holds the whole result
    metrics, entries = alone
    assert len(entries) == len(rows) and {"score", "eval_loss", "score_seen"} <= set(metrics)
    # and each rank did answer only its share: every other batch of 4
    path = resolve_model(cfg.model)
    model, tok = load_model(path), load_tokenizer(path)
    mine = answer_losses(model, tok, rows, cfg, share=(1, 2))
    assert [x is not None for x in mine] == [(i // 4) % 2 == 1 for i in range(len(rows))]
    answered = respond(model, tok, rows, 6, 4, Prompt(prefix=False), share=(1, 2))
    assert 0 < sum(x is not None for x in answered) < len(rows)
