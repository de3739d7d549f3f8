"""Benchmarks that print figures and ratios (`python -m ecomtrain.bench WHICH`; the CLI in
__main__), one module each: asha (ASHA's payoff over the full grid), throughput (ecomtrain
against HF Trainer + PEFT), ablation (what each of ecomtrain's choices saves), raytax (Ray
Train against plain torch.distributed), mfu (one GPU: tokens/s, MFU, memory), data (data
work per rank), evaluation (evaluation on every rank), scale (a simulated big sweep),
corpus (the data path on a generated corpus), mixture (regret against compute of the ways
to choose a mixture) and pack (a sweep with its trials packed in shared runs against one run
per trial); with models (random-initialised models of
real shapes) and measure (process sampling, ratio intervals) beneath them."""
