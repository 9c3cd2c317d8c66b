"""Lightning pieces of a training run: checkpoint files written atomically, a checkpoint every N optimizer steps,
EMA exports at chosen steps, and a W&B logger that cannot fail a run. Module-level classes, so ``ddp_spawn`` can
pickle them."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Iterable

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import WandbLogger

from benchmark.errors import UserError, first_line
from benchmark.io import atomic_torch_save
from benchmark.models import export_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that replaces the old one only once fully written and synced, so a failed
    write (disk full, a kill) leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, path)


class StepCheckpoint(L.Callback):
    """Saves the full training state to ``path`` every ``every`` optimizer steps and after the last one. Runs after
    the step's EMA update (DiffusionTrainer.optimizer_step), so model and EMA in the file belong to the same step."""

    def __init__(self, path: str | os.PathLike, every: int):
        self.path, self.every = path, int(every)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step >= trainer.max_steps:
            try:
                trainer.save_checkpoint(self.path, weights_only=False)
            except OSError as e:
                raise UserError(f"could not write the checkpoint of step {step} to {self.path} ({e.strerror or e}); "
                                f"the previous checkpoint is intact: free disk space and rerun to resume") from e


def ema_snapshot_path(out_dir: str | os.PathLike, step: int) -> Path:
    """Where the EMA export of optimizer step ``step`` goes: ``<out_dir>/ema-step<step>.pt``."""
    return Path(out_dir) / f"ema-step{int(step)}.pt"


def report_past_snapshots(out_dir: str | os.PathLike, steps: Iterable[int], reached: int, kind: str) -> list[int]:
    """Say, one line each, which asked-for snapshots a run that has reached step ``reached`` can no longer make (the
    step is behind it and its file does not exist); returns those steps."""
    past = [step for step in steps if step < reached and not ema_snapshot_path(out_dir, step).is_file()]
    for step in past:
        print(f"{kind}: keep_ema_at step {step} is already past (the run in {out_dir} is at step {reached}), so "
              f"{ema_snapshot_path(out_dir, step).name} cannot be made; fine-tune into a new directory to keep it",
              file=sys.stderr)
    return past


class EmaSnapshots(L.Callback):
    """Exports the EMA weights at the optimizer steps ``steps`` as ``ema-step<N>.pt`` in ``out_dir``: the format of
    ``ema.pt`` (``export_checkpoint``, with ``metadata`` and ``steps=N``), so any command that reads a fine-tune's
    EMA export reads it. Runs after the step's EMA update (DiffusionTrainer.optimizer_step), like StepCheckpoint. On
    resume, a step the run is exactly at is exported from the resumed state; a step already behind it is reported."""

    def __init__(self, out_dir: str | os.PathLike, steps: Iterable[int], metadata: dict, kind: str = "training"):
        self.out_dir, self.steps, self.metadata, self.kind = Path(out_dir), sorted(set(steps)), dict(metadata), kind

    def on_train_start(self, trainer, pl_module):
        start = trainer.global_step
        if trainer.is_global_zero:
            report_past_snapshots(self.out_dir, self.steps, start, self.kind)
        if start in self.steps and start > 0 and not ema_snapshot_path(self.out_dir, start).is_file():
            self._export(trainer, pl_module, start)  # the resumed EMA is the EMA of that step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps:
            self._export(trainer, pl_module, trainer.global_step)

    def _export(self, trainer, pl_module, step: int) -> None:
        state = trainer.strategy.lightning_module_state_dict()  # every rank: a collective gather under FSDP
        if not trainer.is_global_zero:
            return
        ema = {k[len("ema."):]: v for k, v in state.items() if k.startswith("ema.")}
        path = ema_snapshot_path(self.out_dir, step)
        try:
            export_checkpoint(pl_module.model, path, ema_state=ema, **{**self.metadata, "steps": int(step)})
        except OSError as e:
            raise UserError(f"could not write the EMA snapshot of step {step} to {path} ({e.strerror or e}); free "
                            f"disk space and rerun to resume") from e


class SafeWandbLogger(WandbLogger):
    """W&B is a record, never a requirement: the first failure is one warning, then the logger is silent."""

    broken = False

    def _guard(self, what, fn, *args, **kwargs):
        if self.broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - no W&B problem may stop training
            self.broken = True
            warnings.warn(f"W&B {what} failed ({first_line(e)}); training continues without W&B", RuntimeWarning)
            return None

    def log_metrics(self, metrics, step=None):
        self._guard("logging", super().log_metrics, metrics, step)

    def log_hyperparams(self, params):
        self._guard("logging the config", super().log_hyperparams, params)

    def after_save_checkpoint(self, checkpoint_callback):
        self._guard("checkpoint logging", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status):
        self._guard("finishing the run", super().finalize, status)

    def finish(self) -> None:
        """Close the W&B run: Lightning leaves it open, and the next run in this process would reuse it."""
        if self._experiment is not None:
            self._guard("finishing the run", self._experiment.finish)
            self._experiment = None
