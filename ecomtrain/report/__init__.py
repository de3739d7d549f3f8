"""The sweep report: trials.csv, what it says, charts, pages and a W&B summary run.

    trials          the one trials schema: trials.csv written from results, read back typed
    statistics      paired, stratified bootstrap over held-out records plus seed noise,
                    calibrated intervals and multiplicity adjustments
    analysis        views of the trials, cells and comparisons with 95 % intervals, the
                    diversity x capacity interaction and the selected best, confirmed
    findings        what the analysis found, typed; analysis.json written and read back
    planning        what a sweep will be able to see: `sweep --plan`'s detectable effects
    charts          the PNG charts (cell means with 95 % intervals)
    pages           report.md and report.html (and the console table)
    wandb_summary   one W&B run summing up a sweep beside its trial runs
    card            an adapter alone with its model card (export, the sweep's best adapter)

CLI: `python -m ecomtrain.report DIR` rebuilds DIR's report from DIR/trials.csv.
"""
