"""A loopback OpenAI-compatible chat-completions server for generation tests.

It answers POST /v1/chat/completions on 127.0.0.1 with a `respond(body) -> str` function
(scripted outputs derived from the prompt, or the tiny model's own generation), and can
inject faults per request: 400, 401, 429, 500, a timeout (sleeping past the client's limit),
a truncated HTTP body, or a completion whose JSON is cut short. A 400 or 401 echoes the
Authorization header it got, after `echo_offset` characters of error text, as some servers do.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("400", "401", "429", "500", "timeout", "truncated_body", "truncated_json")


def request_id(body: dict) -> str:
    """Identity of a request across retries: its messages and sampling seed."""
    blob = json.dumps([body.get("messages"), body.get("seed")], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def prompt_parts(body: dict) -> tuple[list[dict], str]:
    """(few-shot examples, seed item) of a prompt built by ecomtrain.genspec."""
    user = body["messages"][-1]["content"]
    shown, item = user.split("Examples:\n", 1)[1].split("\n\nItem:\n", 1)
    return [json.loads(line) for line in shown.splitlines()], item


def scripted(body: dict) -> str:
    """A well-formed record derived from the prompt: fresh words, then the first example.

    The example keeps the structure a family needs (options, candidate list, answer type);
    the fresh words (as many as the example has, at least 30) keep records apart for dedup.
    """
    example = prompt_parts(body)[0][0]
    rng = random.Random(request_id(body))
    n = max(30, len(example["input_field"].split()))
    fresh = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(n))
    return json.dumps(
        {
            "input_field": f"{fresh}\n{example['input_field']}",
            "output_field": example["output_field"],
        }
    )


def tiny_model_responder(model_path: str) -> Callable[[dict], str]:
    """The tiny local model's greedy answer to the chat prompt (one request at a time)."""
    import torch

    from ecomtrain.model import load_model, load_tokenizer

    tok, model, lock = load_tokenizer(model_path), load_model(model_path).eval(), threading.Lock()

    def respond(body: dict) -> str:
        prompt = tok.apply_chat_template(
            body["messages"], add_generation_prompt=True, tokenize=False
        )
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        keep = 1000 - body["max_tokens"]  # the tiny model's context is 1024 positions
        enc = {k: v[:, -keep:] for k, v in enc.items()}
        with lock, torch.no_grad():
            ids = model.generate(
                **enc, max_new_tokens=body["max_tokens"], do_sample=False,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )  # fmt: skip
        return tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return respond


class ChatServer:
    """Serve `respond` on a free loopback port in a thread; `fault(request_id, attempt)`
    returns one of FAULTS (or None) for each arriving request."""

    def __init__(
        self, respond, fault=None, delay: float = 0.0, hang: float = 2.0, echo_offset: int = 0
    ):
        self.respond, self.fault, self.delay, self.hang = respond, fault, delay, hang
        self.echo_offset = echo_offset
        self.attempts: Counter = Counter()  # request_id -> requests seen
        self.injected: Counter = Counter()  # fault -> times injected
        self.requests = 0
        self.auth: set = set()  # Authorization headers received
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def next_fault(self, body: dict) -> str | None:
        rid = request_id(body)
        with self.lock:
            attempt = self.attempts[rid]
            self.attempts[rid] += 1
            self.requests += 1
            fault = self.fault(rid, attempt) if self.fault else None
            if fault:
                self.injected[fault] += 1
        return fault


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                return self._send(404, b'{"error": "not found"}')
            server.auth.add(self.headers.get("Authorization"))
            fault = server.next_fault(body)
            time.sleep(server.delay)
            if fault in ("400", "401"):  # like some servers, echo the credential it refuses
                said = "." * server.echo_offset + f"invalid key {self.headers['Authorization']}"
                return self._send(int(fault), json.dumps({"error": said}).encode())
            if fault in ("429", "500"):
                return self._send(int(fault), b'{"error": "injected"}')
            if fault == "timeout":
                time.sleep(server.hang)
            text = server.respond(body)
            finish = "stop"
            if fault == "truncated_json":
                text, finish = text[: len(text) // 2], "length"
            reply = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [
                    {"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": text}}
                ],
            }  # fmt: skip
            data = json.dumps(reply).encode()
            if fault == "truncated_body":
                return self._send(200, data, cut=len(data) // 2)
            self._send(200, data)

        def _send(self, status: int, data: bytes, cut: int | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if cut is None else data[:cut])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout); it will retry
            if cut is not None:
                self.close_connection = True

    return Handler
