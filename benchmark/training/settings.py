"""The training recipe (``finetune:`` in an experiment; the flags of ``dogbench finetune / pretrain``) and how a
run is launched. The defaults are the paper's fine-tuning protocol: DiT-XL/2, 24k steps at batch 32, AdamW 1e-4,
EMA 0.9999, label dropout 0.1."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, field_validator, model_validator

from benchmark.models.adapter import AdapterSettings
from benchmark.settings import ADDED, AMOUNT, HOW, Count, Index, Precision, Real, Settings, identity


class TrainSettings(Settings):
    """What is trained. Every field is part of the run's identity (a run directory refuses to resume with other
    values) but those marked otherwise: ``steps`` is how long (a finished run continues to more steps), the
    ``HOW`` fields how fast or what is kept on the way."""

    steps: Count = Field(24000, json_schema_extra=identity(AMOUNT))
    """optimizer steps"""
    global_batch_size: Count = 32
    """images per optimizer step, summed over all devices"""
    lr: Real = Field(1.0e-4, gt=0, le=1)
    """AdamW learning rate (constant)"""
    weight_decay: Real = Field(0.0, ge=0)
    """AdamW weight decay"""
    ema_decay: Real = Field(0.9999, ge=0, lt=1)
    """decay of the weights' EMA, updated every step (sampling uses the EMA)"""
    label_dropout: Real = Field(0.1, ge=0, lt=1)
    """probability that a label is replaced by the null label (trains CFG's unconditional branch)"""
    precision: Precision = "bf16"
    """fp32, tf32 (fp32 weights, TF32 matmuls) or bf16 (bf16-mixed autocast); CPUs always train in fp32"""
    split: Literal["train", "all"] = "train"
    """images fine-tuned on: the train split, or all images (the public DoG code fine-tunes on the full set)"""
    checkpoint_every: Count = Field(2000, json_schema_extra=identity(HOW))
    """optimizer steps between resumable checkpoints"""
    keep_ema_at: list[Count] = Field([], json_schema_extra=identity(HOW))
    """optimizer steps whose EMA weights are also exported, as ema-step<N>.pt beside ema.pt (e.g. an earlier fine-tune
    as autoguidance's weak guide); steps a run has already passed cannot be kept"""
    num_workers: Index = Field(4, json_schema_extra=identity(HOW))
    """data-loader processes per device"""
    seed: Index = 0
    """seed of the new label table / initialisation, data order, noise and label dropout"""
    adapter: Optional[AdapterSettings] = Field(None, json_schema_extra={"null_word": "none", **identity(ADDED)})
    """none = train every weight; else a LoRA fine-tune through peft, e.g. {kind: lora, rank: 4, alpha: 4, dropout: 0,
    targets: [attn.qkv, attn.proj, mlp.fc1, mlp.fc2]} (on the command line as YAML, or lora for those defaults):
    the new label table is trained in full, every other weight frozen; the export is the adapter (megabytes)"""

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter_from_text(cls, value: Any) -> Any:
        """--adapter '{kind: lora, rank: 8}' (YAML) or --adapter lora (its defaults)."""
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ValueError(f"must be a mapping such as '{{kind: lora, rank: 4}}', got {value!r}") from None
            value = {"kind": value} if isinstance(value, str) else value
        if value is not None and not isinstance(value, (dict, AdapterSettings)):
            raise ValueError(f"must be a mapping such as {{kind: lora, rank: 4}} (or lora), got {value!r}")
        return value

    @field_validator("keep_ema_at")
    @classmethod
    def _sorted(cls, value: list) -> list:
        return sorted(set(value))

    @model_validator(mode="after")
    def _kept_steps_are_trained(self):
        late = [step for step in self.keep_ema_at if step > self.steps]
        if late:
            raise ValueError(f"keep_ema_at {late} is past the {self.steps} steps trained; pass steps up to {self.steps}")
        return self


class StrategySettings(Settings):
    """How a training run uses its processes (an experiment's ``launch:``; ``dogbench finetune --strategy``)."""

    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    """Lightning strategy across processes: ddp, fsdp (shards the model and its EMA), or ddp_spawn (starts its own
    processes)"""


class LaunchSettings(StrategySettings):
    """Where a training run executes. Under torchrun (or SLURM) the run joins the existing processes."""

    devices: Union[int, str] = 1
    """devices per node: a count, a list such as 0,1, or auto (every visible device)"""
    num_nodes: Count = 1
    """machines"""
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    """hardware; auto = a GPU when there is one"""
