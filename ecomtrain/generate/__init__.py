"""LLM data synthesis with sample-output engineering: the wanted properties (difficulty,
format) are carried by the example outputs shown to the model, never asked for in words.

    spec       generation specs (configs/generate/*.yaml), seed pools, the work plan
    backends   completions from an OpenAI-compatible API or a local model on Ray Data
    quality    the quality gate: parse, validate, balance answer positions
    store      the output folder: records, rejects and a ledger, crash-safe
    run        a run: plan, complete, judge, write; resumable and accounted

CLI: `python -m ecomtrain.generate --spec SPEC --out DIR`.
"""
