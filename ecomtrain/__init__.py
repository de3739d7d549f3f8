"""ecomtrain: multi-task LoRA fine-tuning of LLMs for e-commerce on Ray."""

__version__ = "0.1.0"
