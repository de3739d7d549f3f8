"""Completion backends for data generation: an OpenAI-compatible HTTP API, or a local model.

Both are generator functions over work items that yield one `Completion` per item, in the
order they finish. The HTTP backend runs `concurrency` requests at once and retries 429,
5xx, timeouts and broken responses with exponential backoff and jitter; the local backend
runs the model in a Ray Data actor pool (map_batches), greedy or sampled with a per-item seed.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import requests

from ecomtrain.connect import connect
from ecomtrain.generate.spec import WorkItem
from ecomtrain.model import load_model, load_tokenizer, require_chat_template

FATAL_STATUS = (401, 403, 404)  # every request would fail the same way: stop the run
RETRY_STATUS = (408, 409, 429)  # and every 5xx: transient, retried with backoff


class BackendError(RuntimeError):
    """The endpoint refuses all work (bad key, wrong URL or model): the run stops."""


@dataclass
class Completion:
    key: str
    text: str = ""
    finish_reason: str = ""
    error: str = ""  # reason code when no text came back
    detail: str = ""
    final: bool = True  # False: a transient failure that a rerun should retry
    retries: list[str] = field(default_factory=list)  # the cause of each retry


@dataclass
class HttpOptions:
    base_url: str  # e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (vLLM)
    model: str
    concurrency: int = 8  # requests in flight
    timeout: float = 60.0  # seconds per request (connect and each read)
    max_retries: int = 5  # retries per request after the first attempt
    backoff: float = 1.0  # first retry delay in seconds; doubles per retry, plus jitter
    max_backoff: float = 30.0


def openai_completions(
    items: Iterable[WorkItem], opts: HttpOptions, temperature: float, max_tokens: int
) -> Iterator[Completion]:
    """POST each item to {base_url}/chat/completions, at most opts.concurrency at a time."""
    url = opts.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
    local = threading.local()

    def run(item: WorkItem) -> Completion:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body = {
            "model": opts.model,
            "messages": item.messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": item.request_seed,
        }
        return _post(local.session, url, headers, body, opts, item.key)

    pool = ThreadPoolExecutor(max_workers=opts.concurrency, thread_name_prefix="generate-http")
    pending: set = set()
    todo = iter(items)
    try:
        while True:
            while len(pending) < 2 * opts.concurrency and (item := next(todo, None)):
                pending.add(pool.submit(run, item))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _post(session, url: str, headers: dict, body: dict, opts: HttpOptions, key: str) -> Completion:
    """One request with retries; the API key stays in `headers` and is never reported."""
    retries: list[str] = []
    rng = random.Random(key)
    for attempt in range(opts.max_retries + 1):
        wait_s = None
        try:
            resp = session.post(url, json=body, headers=headers, timeout=opts.timeout)
        except requests.Timeout:
            cause = "timeout"
        except requests.RequestException as e:
            cause = f"connection ({type(e).__name__})"
        else:
            status = resp.status_code
            if status == 200:
                done = _parse_response(resp, key, retries)
                if done is not None:
                    return done
                cause = "bad_response"
            elif status in FATAL_STATUS:
                raise BackendError(f"{url}: HTTP {status}: {_error_text(resp, headers)}")
            elif status in RETRY_STATUS or status >= 500:
                cause, wait_s = f"http_{status}", _retry_after(resp)
            else:
                detail = _error_text(resp, headers)
                return Completion(key, error=f"http_{status}", detail=detail)
        if attempt == opts.max_retries:
            break
        retries.append(cause)
        delay = min(opts.max_backoff, opts.backoff * 2**attempt)
        time.sleep(wait_s if wait_s is not None else delay * (0.5 + rng.random()))
    detail = f"gave up after {opts.max_retries + 1} attempts; last: {cause}"
    return Completion(key, error="request_failed", detail=detail, final=False, retries=retries)


def _parse_response(resp, key: str, retries: list[str]) -> Completion | None:
    """The completion in an OpenAI chat response; None when the body is broken (retried)."""
    try:
        choice = resp.json()["choices"][0]
        text = choice["message"]["content"] or ""
        finish = choice.get("finish_reason") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(text, str):  # the same answer again on a rerun: a final reject
        detail = f"message.content is {type(text).__name__}, not text"
        return Completion(key, error="bad_content", detail=detail, retries=retries)
    return Completion(key, text=text, finish_reason=str(finish), retries=retries)


ERROR_CHARS = 300  # of a server's error body, in an error message or a reject


def _error_text(resp, headers: dict) -> str:
    """A server's error body, the API key redacted, then cut to ERROR_CHARS (cut first, a
    key echoed across the cut would survive in part)."""
    secret = headers.get("Authorization", "").removeprefix("Bearer ")
    text = resp.text.replace(secret, "***") if secret else resp.text
    return text[:ERROR_CHARS]


def _retry_after(resp) -> float | None:
    """The server's Retry-After in seconds, within [0, 60]; None when absent or unreadable."""
    try:
        wait = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(60.0, max(0.0, wait)) if math.isfinite(wait) else None


class LocalChat:
    """Ray Data actor: a local causal LM answering chat prompts (one batch per call)."""

    def __init__(self, model_path: str, max_new_tokens: int, temperature: float):
        import torch

        self.torch = torch
        self.tok = load_tokenizer(model_path)
        require_chat_template(self.tok)
        self.tok.padding_side = "left"
        self.model = load_model(model_path).eval()
        self.limit = getattr(self.model.config, "max_position_embeddings", 1 << 30)
        self.max_new, self.temperature = max_new_tokens, temperature

    def __call__(self, batch: dict) -> dict:
        prompts = [
            self.tok.apply_chat_template(json.loads(m), add_generation_prompt=True, tokenize=False)
            for m in batch["messages"]
        ]
        sizes = [len(self.tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        out = {"key": list(batch["key"]), "text": [""] * len(prompts)}
        out["finish_reason"] = [""] * len(prompts)
        out["error"] = [
            f"{n} prompt tokens + {self.max_new} new > context {self.limit}"
            if n + self.max_new > self.limit
            else ""
            for n in sizes
        ]
        fits = [i for i, e in enumerate(out["error"]) if not e]
        # Greedy rows share one batched call; sampled rows go one by one, each with its seed.
        groups = [fits] if self.temperature <= 0 else [[i] for i in fits]
        for group in filter(None, groups):
            answers = self._generate([prompts[i] for i in group], int(batch["seed"][group[0]]))
            for i, (text, finish) in zip(group, answers, strict=True):
                out["text"][i], out["finish_reason"][i] = text, finish
        return out

    def _generate(self, prompts: list[str], seed: int) -> list[tuple[str, str]]:
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sample = self.temperature > 0
        self.torch.manual_seed(seed)
        with self.torch.no_grad():
            ids = self.model.generate(
                **enc,
                max_new_tokens=self.max_new,
                do_sample=sample,
                temperature=self.temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tok.pad_token_id,
                eos_token_id=self.tok.eos_token_id,
            )
        new = ids[:, enc["input_ids"].shape[1] :]
        eos = self.tok.eos_token_id
        return [
            (self.tok.decode(row, skip_special_tokens=True), "stop" if eos in row else "length")
            for row in new.tolist()
        ]


def local_completions(
    items: list[WorkItem], model_path: str, actors: int, temperature: float, max_tokens: int
) -> Iterator[Completion]:
    """Run the items through a Ray Data actor pool of `actors` local model replicas."""
    import ray

    if not items:
        return
    connect()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if actors > cpus:  # an actor pool larger than the cluster would wait forever
        raise BackendError(f"--concurrency {actors}: the Ray cluster has only {cpus} CPUs")
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [
        {"key": it.key, "messages": json.dumps(it.messages), "seed": it.request_seed % 2**31}
        for it in items
    ]
    ds = ray.data.from_items(rows).map_batches(
        LocalChat,
        fn_constructor_kwargs={
            "model_path": model_path,
            "max_new_tokens": max_tokens,
            "temperature": temperature,
        },
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    for row in ds.iter_rows():
        error = row["error"]
        yield Completion(
            row["key"],
            text=row["text"],
            finish_reason=row["finish_reason"],
            error="prompt_too_long" if error else "",
            detail=error,
        )
