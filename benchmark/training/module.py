"""The LightningModule that trains a DiT with DiT's diffusion loss: 1000-step linear schedule, t uniform in
[0, 1000), eps MSE plus the variational bound for the learned variance, AdamW at a constant rate, an EMA of the
weights updated after every optimizer step, and label dropout that trains the null label (CFG's unconditional branch).

Reproducibility: every random draw of a training step (encoder noise of cached latents, t, diffusion noise, label
dropout) comes from a generator seeded by (seed, step), drawn for the whole global batch, of which each rank keeps
the items it holds. A run resumed from a checkpoint therefore draws exactly what the uninterrupted run drew, with no
RNG state to save, and a global batch gets the same numbers whether one device or several train on it.
"""
from __future__ import annotations

import time
import warnings
from typing import Optional

import lightning as L
import torch
from torch import Tensor

from benchmark.diffusion import create_diffusion
from benchmark.errors import UserError
from benchmark.models.adapter import is_adapted
from benchmark.models.dit import DiT
from benchmark.training.ema import TrainableEma, frozen_copy, update_ema


# the EMA copy stays in eval mode on purpose; Lightning's notice about modules in eval mode is noise here
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def step_seed(seed: int, step: int) -> int:
    """A distinct 63-bit seed per (seed, step)."""
    return (seed * 1_000_003 * 2_147_483_659 + step) % (2 ** 63 - 1)


class DiffusionTrainer(L.LightningModule):
    """Trains ``model`` (a DiT) and keeps ``ema``, its exponential moving average.

    Batches are ``(x0, labels)`` (pixel space) or ``(mean, std, labels)`` (cached VAE latents, from which
    ``x0 = mean + std * noise`` is drawn here, as on-the-fly encoding would)."""

    def __init__(self, model: DiT, lr: float = 1e-4, weight_decay: float = 0.0, ema_decay: float = 0.9999,
                 label_dropout: float = 0.1, seed: int = 0, global_batch_size: int = 32):
        super().__init__()
        if label_dropout > 0 and model.y_embedder.embedding_table.num_embeddings <= model.num_classes:
            raise ValueError("label dropout needs the model's null-label row; build it with class_dropout_prob > 0")
        self.save_hyperparameters({"model_config": dict(model.config), "lr": lr, "weight_decay": weight_decay,
                                   "ema_decay": ema_decay, "label_dropout": label_dropout, "seed": seed,
                                   "global_batch_size": global_batch_size})
        self.model = model
        # a LoRA fine-tune (benchmark.models.adapter) trains and averages only its adapter and label table; the frozen
        # source weights are neither copied into the EMA nor saved in checkpoints (finetune reloads them, verified)
        self.trained = model.trainable_names() if is_adapted(model) else None
        self.ema = frozen_copy(model) if self.trained is None else TrainableEma(model, self.trained)
        # Label dropout is drawn in training_step from the step's generator; the DiT's own draw (from the global
        # RNG, not restorable) is switched off. model.config still records the model's class_dropout_prob.
        self.model.y_embedder.dropout_prob = 0.0
        self.diffusion = create_diffusion()  # 1000 steps, DiT's defaults
        self.lr, self.weight_decay, self.ema_decay = lr, weight_decay, ema_decay
        self.label_dropout, self.seed, self.global_batch_size = label_dropout, seed, global_batch_size
        self._last_step_end: Optional[float] = None
        self.session_start: Optional[tuple[int, float]] = None  # (step, time) when this process began training

    def on_train_start(self):
        self.session_start = (self.global_step, time.perf_counter())

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        # the fused CUDA kernel: one launch per step instead of several per parameter tensor (same arithmetic)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=self.device.type == "cuda")

    def _forward_fp32(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        # the loss (VB term: logs and exps of variances) in fp32 even when the network runs in bf16
        return self.model(x, t, y).float()

    def _draw(self, shape, kind: str, g: torch.Generator, dtype=None) -> Tensor:
        """This rank's part of a draw for the whole global batch: the global batch's item j is on rank j % world
        (benchmark.training.datamodule.StreamSampler), so every item gets the same numbers on any number of
        devices (one process draws exactly what it always drew)."""
        world, rank = self.trainer.world_size if self._trainer is not None else 1, self.global_rank
        full = (shape[0] * world, *shape[1:])
        if kind == "randn":
            out = torch.randn(full, generator=g, device=self.device, dtype=dtype)
        elif kind == "rand":
            out = torch.rand(full, generator=g, device=self.device)
        else:
            out = torch.randint(0, self.diffusion.num_timesteps, full, generator=g, device=self.device)
        return out[rank::world]

    def training_step(self, batch, batch_idx):
        g = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, self.global_step))
        if self.trained is not None and self.model.adapter.dropout > 0:
            # peft's LoRA dropout draws from the global generator: seeded per (seed, step, rank) so that a resumed
            # run draws what the uninterrupted one drew (the masks depend on the number of devices)
            torch.manual_seed(step_seed(self.seed + 1, self.global_step) + self.global_rank)
        if len(batch) == 3:
            mean, std, y = batch
            x0 = mean + std * self._draw(mean.shape, "randn", g, mean.dtype)
        else:
            x0, y = batch
        n = len(y)
        t = self._draw((n,), "randint", g)
        noise = self._draw(x0.shape, "randn", g, x0.dtype)
        drop = self._draw((n,), "rand", g) < self.label_dropout
        y = torch.where(drop, torch.full_like(y, self.model.num_classes), y)
        terms = self.diffusion.training_losses(self._forward_fp32, x0, t, {"y": y}, noise=noise)
        loss = terms["loss"].mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mse", terms["mse"].mean())
        if "vb" in terms:
            self.log("train/vb", terms["vb"].mean())
        return loss

    def optimizer_step(self, *args, **kwargs):
        # the EMA follows every optimizer step, before any callback (e.g. a checkpoint) sees the step's end
        super().optimizer_step(*args, **kwargs)
        update_ema(self.ema, self.model, self.ema_decay)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._last_step_end is not None:  # the first step after a (re)start includes setup time
            self.log("train/img_per_s", self.global_batch_size / (now - self._last_step_end), prog_bar=True)
        self._last_step_end = now
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # lets benchmark.models.load_dit rebuild the network from this Lightning checkpoint (it prefers "ema.")
        checkpoint["config"] = dict(self.model.config)
        for key in self._frozen_keys():  # a LoRA fine-tune's source weights: the source checkpoint holds them
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # the frozen source weights a LoRA checkpoint leaves out are the ones this module was built with
        state = checkpoint["state_dict"]
        own = self.state_dict()
        state.update({key: own[key] for key in self._frozen_keys() if key not in state})

    def _frozen_keys(self) -> list[str]:
        if self.trained is None:
            return []
        trained = {"model." + name for name in self.trained}
        return [key for key in self.model.state_dict(prefix="model.") if key not in trained]

    def setup(self, stage: str) -> None:
        if self.trained is not None and "FSDP" in type(self.trainer.strategy).__name__:
            raise UserError("a LoRA fine-tune (finetune.adapter) does not run under FSDP (its EMA holds only the "
                            "adapter); use strategy ddp or auto")
