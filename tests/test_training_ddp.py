"""Two-process DDP on CPU (gloo), launched the way users launch it: `dogbench finetune --devices 2 --strategy ddp`
(Lightning re-runs the command line for the second process)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmark.models import DiT, export_checkpoint, load_dit
from conftest import REPO, SHARED_DATA, run_if, tiny_dit_config


@pytest.mark.slow
@run_if(shared_data="caltech101/caltech101_32.npz")
@pytest.mark.parametrize("adapter", [None, "{rank: 2, dropout: 0.1}"], ids=["full", "lora"])
def test_two_process_ddp_on_cpu(tmp_path, adapter):
    torch.manual_seed(0)
    export_checkpoint(DiT(**tiny_dit_config()), tmp_path / "source.pt", autoencoder="identity")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "benchmark.cli", "finetune", "--source", str(tmp_path / "source.pt"),
           "--dataset", "caltech101-32", "--data-root", str(SHARED_DATA), "--vae", "identity", "--out", str(out),
           "--steps", "3", "--global-batch-size", "8", "--checkpoint-every", "2", "--num-workers", "0",
           "--max-images", "64", "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--no-wandb",
           "--no-progress", "--no-sanity-check"] + (["--adapter", adapter] if adapter else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert "Starting with 2 processes" in result.stdout + result.stderr
    done = json.loads((out / "trained.json").read_text())
    assert done["steps"] == 3
    model = load_dit(out / "ema.pt")
    assert model.config["num_classes"] == 101 and model.checkpoint_meta["steps"] == 3
    assert type(model).__name__ == ("AdaptedDiT" if adapter else "DiT")
