"""Training DiTs with Lightning: fine-tuning a pre-trained source on a target dataset and pre-training from scratch.

    from benchmark.training import finetune, pretrain, TrainSettings
    ema_path = finetune(SourceSettings(), "food101", "results/paper/food101/finetune", {"steps": 24000})
"""
from benchmark.training.run import finetune, pretrain
from benchmark.training.settings import LaunchSettings, StrategySettings, TrainSettings
from benchmark.training.spec import RunOutput, TrainingSet

__all__ = ["LaunchSettings", "RunOutput", "StrategySettings", "TrainSettings", "TrainingSet", "finetune", "pretrain"]
