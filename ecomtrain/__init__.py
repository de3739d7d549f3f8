"""ecomtrain: multi-task LoRA fine-tuning of LLMs for e-commerce on Ray.

Which task mixture, and how much adapter capacity, make the best shopping assistant? The
house, bottom to top (a module imports only from the lines above it, or its own line):

    config      typed configuration from YAML with `a.b=c` overrides
    console     -v/-q, quiet Ray workers, progress lines and bars
    tracking    W&B runs of every entry point (job types, tags, predictions tables)
    tasks       capabilities (ShopBench tracks) and task families
    experts     routed LoRA shapes: an expert per capability, a mixture of experts
    model       base models, tokenizers, LoRA adapters (single or routed)
    connect     joining a Ray cluster, or starting a local one
    files       the cache folder and atomic writes
    data/       corpus files to the packed, mixed stream a trial trains on
    base_model  the offline tiny model, and where a model name points
    evaluate/   ShopBench metrics, answering, the actor pool, evaluation files
    train/      one LoRA fine-tuning on Ray Train workers with DeepSpeed
    generate/   LLM data synthesis with engineered example outputs
    report/     trials.csv, analysis, charts, report pages, W&B summary, model cards
    sweep       `python -m ecomtrain.sweep`: the Tune sweep (uses tuning/)
    export      merge an adapter into its base model, or ship it alone with a card
    bench/      benchmarks that print figures, a module each

`ecomtrain COMMAND` (ecomtrain/__main__.py) runs every entry point from one table.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes warns as it is imported (peft imports it), on CPUs with AVX512-BF16, that an
# optional package with a faster CPU kernel for 4-bit matmuls is missing: in every command
# and Ray worker, before any can set up its console. It concerns only model.quantization=nf4
# on a CPU (which works without it), so it is held here, before anything imports peft.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
