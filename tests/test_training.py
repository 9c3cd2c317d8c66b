"""Fine-tuning and pre-training: the loss falls, kill-and-resume is exact, checkpoints survive a full disk, re-heading
keeps the weights, the EMA export samples, and bad input is one clear error."""
import errno
import gc
import os
import warnings

import numpy as np
import pytest
import lightning.pytorch as pl
import torch

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.models import CheckpointError, DiT, export_checkpoint, load_dit, reheaded
from benchmark.training import run as training_run
from benchmark.training.callbacks import SafeWandbLogger
from benchmark.training.datamodule import PixelDataset, StreamSampler
from benchmark.training.ema import frozen_copy, update_ema
from benchmark.cli import train as train_command
from benchmark.harness.loading import load_experiment
from benchmark.tracking import WandbSettings
from benchmark.models.settings import ArchitectureSettings, SourceSettings
from benchmark.training import LaunchSettings, RunOutput, TrainingSet, TrainSettings
from benchmark.training.run import finetune, pretrain
from benchmark.training.spec import NetworkToTrain
from conftest import SHARED_DATA, run_if, tiny_dit_config

CALTECH = "caltech101-32"
needs_caltech = run_if(shared_data="caltech101/caltech101_32.npz")
SMALL = {"steps": 6, "global_batch_size": 8, "checkpoint_every": 3, "num_workers": 0, "lr": 1e-3, "ema_decay": 0.9}


def tune(source, out, settings, *, dataset=CALTECH, root=SHARED_DATA, max_images=64, launch=LaunchSettings(),
         autoencoder="identity", wandb=WandbSettings(enabled=False)):
    """finetune quietly on at most ``max_images`` images."""
    return finetune(source, TrainingSet(dataset, root, max_images=max_images),
                    RunOutput(out, wandb=wandb, progress=False), settings, launch, autoencoder)


def data(max_images=64):
    return TrainingSet(CALTECH, SHARED_DATA, max_images=max_images)


def quiet(out):
    return RunOutput(out, wandb=WandbSettings(enabled=False), progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny pixel-space 'pre-trained' DiT (8x8, 5 classes) exported like a pretrain run's EMA file."""
    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())
    with torch.no_grad():  # not adaLN-Zero's all-zero output: a real function to start from
        for p in model.parameters():
            p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("source") / "source.pt"
    export_checkpoint(model, path, autoencoder="identity", dataset="toy", num_classes=5)
    return path


def lightning_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


# ---- pieces ------------------------------------------------------------------------------------------------------


def test_ema_update_is_the_dit_formula():
    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())
    ema = frozen_copy(model)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    update_ema(ema, model, 0.9)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ema.state_dict()[k], 0.9 * before[k] + 0.1 * v)
    update_ema(ema, model, 0.0)
    for k, v in model.state_dict().items():
        assert torch.equal(ema.state_dict()[k], v)


def test_stream_is_seeded_resumable_and_independent_of_world_size():
    n = 10
    one = StreamSampler(n, seed=3)
    stream = [x for _, x in zip(range(35), iter(one))]
    for epoch in range(3):  # each epoch visits every image once, each with some mirror bit
        assert sorted(x % n for x in stream[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert set(stream) - set(range(2 * n)) == set() and any(x >= n for x in stream) and any(x < n for x in stream)
    # two ranks, interleaved, give the same global stream
    ranks = [[x for _, x in zip(range(15), iter(StreamSampler(n, seed=3, rank=r, world_size=2)))] for r in (0, 1)]
    assert [x for pair in zip(*ranks) for x in pair] == stream[:30]
    # resuming 7 items into rank 1's share continues exactly there
    later = [x for _, x in zip(range(5), iter(StreamSampler(n, seed=3, rank=1, world_size=2, start=7)))]
    assert later == ranks[1][7:12]
    assert stream != [x for _, x in zip(range(35), iter(StreamSampler(n, seed=4)))]


@needs_caltech
def test_pixel_dataset_items_and_mirrors():
    from benchmark.data import get_dataset
    from benchmark.data.transforms import eval_transform

    images = get_dataset(CALTECH, root=SHARED_DATA).subset(range(5))
    for preload in (True, False):
        data = PixelDataset(images, 8, preload=preload, progress=False)
        assert len(data) == 10
        x, y = data[1]
        torch.testing.assert_close(x, eval_transform(8)(images[1][0]))
        assert y == images.labels[1]
        assert torch.equal(data[6][0], x.flip(-1))
    native = PixelDataset(images, 32, progress=False)  # the shared sets at their own size
    assert torch.equal(native[3][0], eval_transform(32)(images[3][0]))


def test_settings_are_validated():
    assert TrainSettings().to_dict()["steps"] == 24000  # the paper's protocol by default
    s = TrainSettings.parse({"steps": "100", "lr": "2e-4", "precision": "bf16-mixed"})
    assert s.steps == 100 and s.lr == 2e-4 and s.precision == "bf16"  # Lightning's name is read as ours
    with pytest.raises(UserError, match="did you mean 'steps'"):
        TrainSettings.parse({"stepz": 3})
    with pytest.raises(UserError, match="ema_decay=1.0 must be < 1"):
        TrainSettings.parse({"ema_decay": 1.0})
    with pytest.raises(UserError, match="EMA"):
        TrainSettings.parse({"precision": "bf16-true"})
    with pytest.raises(UserError, match="steps: must be a whole number"):
        TrainSettings.parse({"steps": 2.5})


# ---- fine-tuning -------------------------------------------------------------------------------------------------


@needs_caltech
def test_finetune_reheads_and_keeps_every_other_weight(source, tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(training_run, "train", lambda net, *a, **k: captured.setdefault("model", net.model))
    tune(source, tmp_path / "run", SMALL)
    model, src = captured["model"], load_dit(source)
    assert model.config == {**src.config, "num_classes": 101}
    new, old = model.state_dict(), src.state_dict()
    assert new.keys() == old.keys()
    for k in old:
        if k.startswith("y_embedder."):
            assert new[k].shape == (102, 32)  # 101 caltech classes + the null label
        else:
            assert torch.equal(new[k], old[k]), k


@needs_caltech
def test_finetune_a_named_pixel_source_as_the_harness_does(tmp_path, monkeypatch):
    from benchmark.models import build_dit

    torch.manual_seed(0)
    src = build_dit("DiT-N/2", input_size=32, in_channels=3, num_classes=10)
    torch.save({"ema": src.state_dict()}, tmp_path / "bare.pt")  # weights only, like the DiT release files
    captured = {}
    monkeypatch.setattr(training_run, "train", lambda net, *a, **k: captured.update(net=net))
    tune(SourceSettings(checkpoint=str(tmp_path / "bare.pt"), model="DiT-N/2", num_classes=10, image_size=32,
                        sanity_check=False), tmp_path / "run", SMALL)  # random weights do not pass the probe
    config = captured["net"].model.config
    assert (config["in_channels"], config["input_size"], config["num_classes"]) == (3, 32, 101)
    assert captured["net"].resolution == 32 and captured["net"].metadata["source_num_classes"] == 10


@pytest.fixture(scope="module")
def trained(source, tmp_path_factory):
    """A short fine-tune on 256 caltech101-32 images, logged to CSV and (offline) W&B."""
    if not (SHARED_DATA / "caltech101" / "caltech101_32.npz").is_file():
        pytest.skip("shared caltech101-32 data not present")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finetune") / "run"
    settings = {**SMALL, "steps": 40, "global_batch_size": 16, "checkpoint_every": 20, "ema_decay": 0.8}
    try:
        path = tune(source, out, settings, max_images=256, wandb=WandbSettings(mode="offline"))
    finally:
        torch.set_num_threads(threads)
    return path, out, settings


def eval_loss(model, x, y, seed=0):
    from benchmark.diffusion import create_diffusion

    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (len(x),), generator=g)
    noise = torch.randn(x.shape, generator=g)
    model = model.eval()
    with torch.no_grad():
        return create_diffusion().training_losses(model, x, t, {"y": y}, noise=noise)["mse"].mean().item()


def test_finetune_loss_falls_and_logs(trained, source):
    from benchmark.data import get_dataset

    path, out, settings = trained
    images = get_dataset(CALTECH, root=SHARED_DATA)
    images = images.subset(np.linspace(0, len(images) - 1, 256).round().astype(np.int64))
    x, y = zip(*[PixelDataset(images, 8, progress=False)[i] for i in range(0, 256, 4)])
    x, y = torch.stack(x), torch.stack(y)
    start = reheaded(load_dit(source), 101, seed=settings.get("seed", 0))  # what fine-tuning starts from
    trained_model = load_dit(out / "checkpoints" / "last.ckpt", prefer="model")
    ema = load_dit(path)
    before, after, after_ema = eval_loss(start, x, y), eval_loss(trained_model, x, y), eval_loss(ema, x, y)
    assert after < 0.8 * before, (before, after)
    assert after_ema < 0.9 * before, (before, after_ema)

    import pandas as pd

    (csv,) = (out / "csv").glob("version_*/metrics.csv")
    log = pd.read_csv(csv)
    assert {"train/loss", "train/img_per_s", "train/lr"} <= set(log.columns)
    losses = log["train/loss"].dropna().to_numpy()
    assert len(losses) >= 4 and losses[-2:].mean() < losses[:2].mean()
    assert list((out / "wandb").glob("offline-run-*")), "offline W&B run missing"
    done = training_run.read_json(out / "trained.json")
    assert done["steps"] == 40 and done["session"]["img_per_s"] > 0


def test_ema_export_loads_and_samples(trained, source, tmp_path):
    path, out, _ = trained
    model = load_dit(path)
    meta = model.checkpoint_meta
    assert model.config["num_classes"] == 101 and model.config["class_dropout_prob"] == 0.1
    assert meta["dataset"] == CALTECH and meta["autoencoder"] == "identity" and meta["steps"] == 40
    assert meta["source"] == str(source) and len(meta["source_sha256"]) == 64
    ckpt = lightning_state(out / "checkpoints" / "last.ckpt")
    for k, v in model.state_dict().items():  # the export is the checkpoint's EMA
        assert torch.equal(v, ckpt["state_dict"]["ema." + k])
    for method in ("cfg", "dog"):
        args = ["sample", "--finetuned", str(path), "--pretrained", str(source), "--method", method, "--w", "1.5",
                "--num-samples", "3", "--out", str(tmp_path / method), "--steps", "2", "--batch-size", "3",
                "--device", "cpu", "--clip-denoised"]
        assert main(args) == 0
        assert len(list((tmp_path / method).rglob("*.png"))) == 3


def test_finished_run_returns_at_once_and_more_steps_continue(trained, source, monkeypatch):
    path, out, settings = trained
    import lightning

    class NoTrainer:
        def __init__(self, *a, **k):
            raise AssertionError("a finished run must not train again")

    with monkeypatch.context() as m:
        m.setattr(lightning, "Trainer", NoTrainer)
        assert tune(source, out, settings, max_images=256) == path
    with pytest.raises(UserError, match="another training run"):
        tune(source, out, {**settings, "lr": 5e-4}, max_images=256)


@needs_caltech
def test_kill_and_resume_reaches_the_same_weights(source, tmp_path, monkeypatch):
    from benchmark.training.module import DiffusionTrainer

    straight = tune(source, tmp_path / "straight", SMALL)

    real_step = DiffusionTrainer.training_step

    def killed_at_step_4(self, batch, batch_idx):
        if self.global_step == 4:
            raise RuntimeError("killed")
        return real_step(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(DiffusionTrainer, "training_step", killed_at_step_4)
        with pytest.raises(RuntimeError, match="killed"):
            tune(source, tmp_path / "resumed", SMALL)
    assert lightning_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert not (tmp_path / "resumed" / "ema.pt").exists()
    resumed = tune(source, tmp_path / "resumed", SMALL)

    a = lightning_state(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = lightning_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:  # model and EMA
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for (k, va), vb in zip(torch.load(straight)["ema"].items(), torch.load(resumed)["ema"].values()):
        assert torch.equal(va, vb), k

    # asking for more steps continues the finished run
    tune(source, tmp_path / "resumed", {**SMALL, "steps": 8})
    assert lightning_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 8


@needs_caltech
def test_keep_ema_at_exports_those_steps_and_says_which_are_past_on_resume(source, tmp_path, monkeypatch, capsys):
    from benchmark.training.module import DiffusionTrainer

    def ema_of(path):
        return torch.load(path, weights_only=False)["ema"]

    keep = {**SMALL, "keep_ema_at": [5, 1, 3]}
    straight = tmp_path / "straight"
    tune(source, straight, keep)
    assert sorted(p.name for p in straight.glob("ema-step*.pt")) == ["ema-step1.pt", "ema-step3.pt", "ema-step5.pt"]
    snapshot = load_dit(straight / "ema-step3.pt")  # the format of ema.pt: what dogbench sample reads
    assert snapshot.checkpoint_meta["steps"] == 3 and snapshot.checkpoint_meta["dataset"] == CALTECH
    assert training_run.read_json(straight / "trained.json")["ema_snapshots"]["5"].endswith("ema-step5.pt")
    assert not torch.equal(ema_of(straight / "ema-step3.pt")["final_layer.linear.weight"],
                           ema_of(straight / "ema.pt")["final_layer.linear.weight"])

    # a run killed after its step-3 checkpoint, resumed with snapshots asked for: step 1 is behind it (one line),
    # step 3 is the resumed state itself, step 5 is ahead; both kept ones equal the uninterrupted run's
    real_step = DiffusionTrainer.training_step

    def killed_at_step_4(self, batch, batch_idx):
        if self.global_step == 4:
            raise RuntimeError("killed")
        return real_step(self, batch, batch_idx)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        m.setattr(DiffusionTrainer, "training_step", killed_at_step_4)
        with pytest.raises(RuntimeError, match="killed"):
            tune(source, resumed, SMALL)
    capsys.readouterr()
    tune(source, resumed, keep)  # keep_ema_at is not part of the run's identity
    past = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finetune: keep_ema_at")]
    assert len(past) == 1 and "step 1 is already past" in past[0] and "ema-step1.pt cannot be made" in past[0]
    assert sorted(p.name for p in resumed.glob("ema-step*.pt")) == ["ema-step3.pt", "ema-step5.pt"]
    for name in ("ema-step3.pt", "ema-step5.pt"):
        for k, v in ema_of(straight / name).items():
            assert torch.equal(v, ema_of(resumed / name)[k]), (name, k)

    # a finished run is not trained again: a step behind it is reported, its last step is its ema.pt
    tune(source, resumed, {**SMALL, "keep_ema_at": [2, 6]})
    assert "keep_ema_at step 2 is already past" in capsys.readouterr().err
    assert (resumed / "ema-step6.pt").read_bytes() == (resumed / "ema.pt").read_bytes()
    with pytest.raises(UserError, match=r"keep_ema_at \[9\] is past the 6 steps"):
        tune(source, resumed, {**SMALL, "keep_ema_at": [9]})
    assert TrainSettings(keep_ema_at=[2]).identity() == TrainSettings().identity()


@needs_caltech
def test_full_disk_keeps_the_previous_checkpoint(source, tmp_path, monkeypatch):
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    real_fsync = os.fsync

    def full_disk(fd):
        if last.exists():  # the first checkpoint got through; the next one finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    settings = {**SMALL, "steps": 4, "checkpoint_every": 2}
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(UserError, match="previous checkpoint is intact"):
            tune(source, out, settings)
    assert lightning_state(last)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no half-written temporary left
    tune(source, out, settings)
    assert lightning_state(last)["global_step"] == 4


def test_errors_are_one_line(source, tmp_path, capsys):
    with pytest.raises(UserError, match="dogbench prepare"):  # (caltech101-32 would come from the packaged pack)
        tune(source, tmp_path / "o", SMALL, dataset="cub100-32", root=tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not found"):
        tune(tmp_path / "missing.pt", tmp_path / "o", SMALL)
    with pytest.raises(CheckpointError, match="5 classes but 7"):
        tune(SourceSettings.from_checkpoint(source).replaced(num_classes=7), tmp_path / "o", SMALL)
    with pytest.raises(FileNotFoundError, match="VAE"):
        tune(source, tmp_path / "o", SMALL, autoencoder=str(tmp_path / "no-vae"))
    with pytest.raises(UserError, match="image size|px"):
        tune(SourceSettings.from_checkpoint(source).replaced(image_size=16), tmp_path / "o", SMALL)
    base = ["finetune", "--dataset", CALTECH, "--out", str(tmp_path / "o"), "--vae", "identity", "--no-wandb",
            "--data-root", str(SHARED_DATA)]
    assert main(base + ["--source", str(tmp_path / "missing.pt")]) == 1
    assert main(base + ["--source", str(source), "--global-batch-size", "0"]) == 1
    assert main(base) == 1  # no source
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dogbench finetune: error:")]
    assert len(err) == 3
    assert "needs --source" in err[-1]


def test_settings_from_a_config_file_with_overrides(source, tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(train_command, "finetune", lambda *a, **k: captured.update(args=a, kwargs=k))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("finetune:\n  steps: 77\n  lr: 3.0e-4\n  ema_decay: 0.99\n")
    assert main(["finetune", "--source", str(source), "--dataset", CALTECH, "--out", str(tmp_path / "o"),
                 "--config", str(cfg), "--lr", "5e-5", "--no-wandb", "--vae", "identity"]) == 0
    source, data, out, settings, launch, autoencoder = captured["args"]
    assert (settings.steps, settings.lr, settings.ema_decay, settings.global_batch_size) == (77, 5e-5, 0.99, 32)
    assert out.wandb.enabled is False and autoencoder == "identity"
    assert launch == LaunchSettings()  # one device unless told otherwise
    # the rest comes from the file; the command line probes the source before a fresh run
    assert source == SourceSettings.from_checkpoint(str(source.checkpoint)).replaced(sanity_check=True)
    cfg.write_text("finetune:\n  stepz: 77\n")
    assert main(["finetune", "--source", str(source), "--dataset", CALTECH, "--out", str(tmp_path / "o"),
                 "--config", str(cfg)]) == 1


def test_experiment_config_supplies_source_and_settings(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(train_command, "finetune", lambda *a, **k: captured.update(args=a, kwargs=k))
    assert main(["finetune", "--config", "default", "--dataset", CALTECH, "--out", str(tmp_path / "o"),
                 "--steps", "5"]) == 0
    source, data, out, settings, launch, autoencoder = captured["args"]
    assert source.checkpoint.endswith("source_cifar10_dit.pt") and settings.steps == 5
    default = load_experiment("default")
    assert (settings.ema_decay, settings.global_batch_size) == (default.finetune.ema_decay, default.finetune.global_batch_size)
    assert autoencoder == "identity" and source.replaced(checkpoint=default.source.checkpoint) == default.source
    # the experiment's W&B settings reach the fine-tune (project, entity, mode), not a bare on/off
    assert out.wandb == default.tracking.wandb


# ---- pre-training and logging ------------------------------------------------------------------------------------


@needs_caltech
def test_pretrain_from_scratch(tmp_path):
    arch = {k: v for k, v in tiny_dit_config().items()
            if k not in ("input_size", "in_channels", "num_classes", "class_dropout_prob", "learn_sigma")}
    out = pretrain(ArchitectureSettings(model=arch, image_size=8), data(), quiet(tmp_path / "pre"),
                   {**SMALL, "steps": 3})
    model = load_dit(out)
    assert model.config["input_size"] == 8 and model.config["num_classes"] == 101
    assert model.checkpoint_meta["steps"] == 3 and model.checkpoint_meta["model_name"] == "custom"
    # the same seed gives the same initialisation, whatever the global RNG did before
    torch.manual_seed(123)
    again = pretrain(ArchitectureSettings(model=arch, image_size=8), data(), quiet(tmp_path / "again"),
                     {**SMALL, "steps": 3})
    for (k, a), b in zip(torch.load(out)["ema"].items(), torch.load(again)["ema"].values()):
        assert torch.equal(a, b), k
    with pytest.raises(UserError, match="not a known DiT config"):
        pretrain("DiT-Q/2", data(), quiet(tmp_path / "x"), SMALL)


def test_wandb_failures_never_stop_training(tmp_path, monkeypatch):
    import wandb

    def broken_init(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="W&B could not start"):
        loggers = training_run._make_loggers(tmp_path, "abc", {}, WandbSettings(mode="offline"))
    assert [type(x).__name__ for x in loggers] == ["CSVLogger"]
    assert [type(x).__name__ for x in training_run._make_loggers(tmp_path, "abc", {}, WandbSettings(enabled=False))] \
        == ["CSVLogger"]

    logger = SafeWandbLogger(save_dir=str(tmp_path), mode="offline")

    class Broken:
        def log(self, *a, **k):
            raise ConnectionError("lost")

    logger._experiment = Broken()
    with pytest.warns(RuntimeWarning, match="training continues without W&B"):
        logger.log_metrics({"train/loss": 1.0}, step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger.log_metrics({"train/loss": 1.0}, step=2)  # silent from now on


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_caltech
@pytest.mark.parametrize("strategy", ["auto", "fsdp"])
def test_bf16_finetune_on_gpu(source, tmp_path, strategy):
    settings = {**SMALL, "precision": "bf16"}
    launch = LaunchSettings(devices=1, strategy=strategy)
    out = tune(source, tmp_path / strategy, settings, launch=launch)
    assert training_run.read_json(tmp_path / strategy / "trained.json")["precision"] == "bf16"
    model = load_dit(out)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    # a second identical run reaches the same weights (per-step generators; GPU kernels may differ in the last bits)
    again = tune(source, tmp_path / "again", settings, launch=launch)
    for (k, a), b in zip(torch.load(out)["ema"].items(), torch.load(again)["ema"].values()):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=k)


@needs_caltech
def test_training_state_is_freed_before_train_returns(tmp_path):
    """A ``dogbench run`` samples in the process that fine-tuned: gradients, AdamW's moments, the EMA copy and the
    Lightning objects must be gone by then, without waiting for Python's cycle collector (switched off here)."""
    from benchmark.training.module import DiffusionTrainer
    network = DiT(**{**tiny_dit_config(), "num_classes": 101})
    gc.collect()
    gc.disable()
    try:
        training_run.train(NetworkToTrain(network, "pretrain", "identity", 8), data(), quiet(tmp_path / "run"),
                           TrainSettings.parse({**SMALL, "steps": 2}, "pretrain"))
        alive = [type(o).__name__ for o in gc.get_objects()
                 if issubclass(type(o), (DiffusionTrainer, torch.optim.Optimizer, pl.Trainer))]  # type(): no module getattr
    finally:
        gc.enable()
    assert alive == []
    assert all(p.grad is None for p in network.parameters())
