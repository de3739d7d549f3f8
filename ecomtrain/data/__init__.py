"""Corpus data: from task files to the packed, mixed stream a trial trains on.

    corpus     locate corpus files (local, built-in, hub) and read them with line numbers
    sources    data sets of other shapes (the data.sources key), mapped to ShopBench records
    shopping_mmlu  the Shopping MMLU benchmark's folders and files as ShopBench records
    records    what a record must hold (checks), its task family, its answer text
    overlap    exact and near duplicates, decontamination against eval sets
    scan       parse every file into rows or bad records; count them per task (cached)
    mixture    how many records of each task one epoch holds (and its out-of-domain share)
    packing    the prompt (chat template or raw), tokenise, mask the prompt, pack into rows
    pipeline   the Ray Data pipeline of a trial: read, split, tokenise, one share per rank
    share      a rank's share, and the endless stream of packed micro-batches it trains on
    demo       the built-in demo corpus
    world      the shopping world: a generated catalogue with planted transfer and a control
    ood        the built-in out-of-domain corpus (arithmetic, general knowledge)

CLI: `python -m ecomtrain.data validate|stats PATH...`.
"""
