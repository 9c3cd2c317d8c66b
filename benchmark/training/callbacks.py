"""Lightning pieces of a training run: checkpoint files written atomically, a checkpoint every N optimizer steps,
and a W&B logger that cannot fail a run. Module-level classes, so ``ddp_spawn`` can pickle them."""
from __future__ import annotations

import os
import warnings

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import WandbLogger

from benchmark.errors import UserError, first_line
from benchmark.io import atomic_torch_save


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
