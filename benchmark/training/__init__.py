"""Training DiTs with Lightning: fine-tuning a pre-trained source on a target dataset and pre-training from scratch.

    from benchmark.training import finetune, pretrain, TrainSettings
    ema_path = finetune("DiT-XL-2-256x256.pt", "food101", "results/paper/food101/finetune", {"steps": 24000})
"""
from benchmark.training.run import finetune, pretrain
from benchmark.training.settings import LaunchSettings, TrainSettings

__all__ = ["LaunchSettings", "TrainSettings", "finetune", "pretrain"]
