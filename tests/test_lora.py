"""LoRA fine-tunes through peft (benchmark.models.adapter): the adapter spec and its targets, where the fine-tune
starts, the small export rebuilt on its hash-checked base, kill-and-resume, DoG with one copy of the weights (the
source view is the source model to 1e-6; one copy samples what two copies sample), and every method with it."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.guidance import resolve_method
from benchmark.io import file_sha256
from benchmark.models import CheckpointError, DiT, IdentityAutoencoder, export_checkpoint, load_dit, reheaded
from benchmark.models.adapter import AdaptedDiT, AdapterSettings, adapter_modules, with_adapter
from benchmark.sampling import SamplingSettings, build_sampler
from benchmark.sampling.one_copy import mixed_batch
from benchmark.tracking import WandbSettings
from benchmark.training import RunOutput, TrainingSet, TrainSettings
from benchmark.training.run import finetune
from conftest import SHARED_DATA, run_if, tiny_dit_config

CALTECH = "caltech101-32"
needs_caltech = run_if(shared_data="caltech101/caltech101_32.npz")
ADAPTER = {"rank": 2, "alpha": 4, "dropout": 0.1, "targets": ["attn", "mlp.fc1", "adaLN_modulation"]}
SMALL = {"steps": 6, "global_batch_size": 8, "checkpoint_every": 3, "num_workers": 0, "lr": 1e-2, "ema_decay": 0.5,
         "keep_ema_at": [3], "adapter": ADAPTER}
DATA = TrainingSet(CALTECH, SHARED_DATA, max_images=64)


def quiet(out):
    return RunOutput(out, wandb=WandbSettings(enabled=False), progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("source") / "source.pt"
    export_checkpoint(model, path, autoencoder="identity", dataset="toy", num_classes=5)
    return path


@pytest.fixture(scope="module")
def lora_run(source, tmp_path_factory):
    """A LoRA fine-tune made by the command line (--adapter as YAML), with an EMA snapshot at step 3."""
    if not (SHARED_DATA / "caltech101" / "caltech101_32.npz").is_file():
        pytest.skip("shared caltech101-32 data not present")
    out = tmp_path_factory.mktemp("lora") / "run"
    args = ["finetune", "--source", str(source), "--dataset", CALTECH, "--out", str(out), "--autoencoder", "identity",
            "--data-root", str(SHARED_DATA), "--max-images", "64", "--no-wandb", "--no-progress", "--no-sanity-check",
            "--adapter", "{rank: 2, alpha: 4, dropout: 0.1, targets: [attn, mlp.fc1, adaLN_modulation]}"]
    for key, value in SMALL.items():
        if key != "adapter":
            args += ["--" + key.replace("_", "-"), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    assert main(args) == 0
    return out


def inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g)


# ---- the spec ----------------------------------------------------------------------------------------------------


def test_targets_select_whole_parts_of_linear_paths():
    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())  # depth 2
    assert adapter_modules(model, ["attn"]) == [f"blocks.{i}.attn.{n}" for i in (0, 1) for n in ("qkv", "proj")]
    assert adapter_modules(model, ["adaLN_modulation"]) == \
        ["blocks.0.adaLN_modulation.1", "blocks.1.adaLN_modulation.1", "final_layer.adaLN_modulation.1"]
    assert len(adapter_modules(model, AdapterSettings().targets)) == 4 * 2  # qkv, proj, fc1, fc2 per block
    assert adapter_modules(model, ["blocks.1.mlp"]) == ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]
    with pytest.raises(ValueError, match=r"'blocks.5' matches no Linear layer of the source DiT \(depth 2\)"):
        adapter_modules(model, ["blocks.5"])


@pytest.mark.parametrize("spec, words", [
    ({"kind": "lorax"}, "finetune.adapter.kind='lorax' is not one of lora"),
    ({"rank": 0}, "finetune.adapter.rank=0 must be >= 1"),
    ({"targets": ["attn.qvk"]}, "'attn.qvk' matches no Linear layer of a DiT; did you mean 'attn.qkv'?"),
    ({"targets": ["x_embedder.proj"]}, "matches no Linear layer"),  # a convolution, not a projection
    ({"dropout": 1.0}, "finetune.adapter.dropout=1.0 must be < 1"),
    ({"rnak": 4}, "did you mean 'finetune.adapter.rank'"),
])
def test_bad_adapter_specs_are_one_line(spec, words):
    with pytest.raises(ConfigError) as e:
        TrainSettings.parse({"adapter": spec}, "finetune")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_full_finetune_keeps_its_identity_and_an_adapter_is_part_of_it():
    assert "adapter" not in TrainSettings().identity()  # marked ADDED: at its default it is not part of a run's identity
    lora = TrainSettings.parse({"adapter": "lora"})
    assert lora.identity()["adapter"] == {"kind": "lora", "rank": 4, "alpha": 4.0, "dropout": 0.0,
                                          "targets": ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]}
    assert TrainSettings.parse({"adapter": {"rank": 8}}).identity() == \
        TrainSettings.parse({"adapter": {"rank": 8, "alpha": 8}}).identity()  # alpha defaults to the rank


# ---- the model ---------------------------------------------------------------------------------------------------


def test_lora_starts_where_the_full_finetune_starts_with_only_adapter_and_table_trainable(source):
    x, t = inputs()
    y = torch.tensor([0, 6, 7])  # 7 = the new null label
    full = reheaded(load_dit(source), 7, seed=3).eval()
    src = load_dit(source)
    lora = with_adapter(src, 7, AdapterSettings(rank=2), seed=3).eval()  # eval: no label dropout
    assert lora.dit is src  # the source itself, wrapped: no copy of its weights
    with torch.no_grad():
        assert torch.equal(lora(x, t, y), full(x, t, y))  # LoRA's B starts at 0; the same fresh label table
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable == lora.trainable_names() and all(".lora_" in n or "modules_to_save" in n for n in trainable)
    assert sum(p.numel() for n, p in lora.named_parameters() if p.requires_grad) == \
        2 * 2 * ((32 + 96) + (32 + 32) + (32 + 64) + (64 + 32)) + 8 * 32  # r (in + out) per layer and block; table
    assert (lora.num_classes, lora.null_label, lora.config["num_classes"]) == (7, 7, 7)
    lora.y_embedder.dropout_prob = 1.0  # a DiT's own label dropout (train mode) drops to the fine-tune's null row
    with torch.no_grad():
        assert torch.equal(lora.train()(x, t, y), lora.eval()(x, t, torch.full_like(y, 7)))


@needs_caltech
def test_export_is_small_hashed_and_rebuilds_the_finetune(lora_run, source):
    export = lora_run / "ema.pt"
    obj = torch.load(export, weights_only=True)
    assert export.stat().st_size < 0.5 * source.stat().st_size
    assert obj["source_sha256"] == file_sha256(source) and len(obj["content_sha256"]) == 64
    assert obj["adapter"]["rank"] == 2 and "y_embedder.embedding_table.modules_to_save.default.weight" in \
        obj["adapter_weights"]
    ckpt = torch.load(lora_run / "checkpoints" / "last.ckpt", weights_only=False)
    # the training checkpoint holds the trained weights, their EMA and the optimizer state, not the source's weights
    assert all(".lora_" in k or "modules_to_save" in k for k in ckpt["state_dict"])
    prefix = "ema.peft.base_model.model."
    for name, value in obj["adapter_weights"].items():  # the export is the checkpoint's EMA
        assert torch.equal(value, ckpt["state_dict"][prefix + name]), name
    model = load_dit(export)
    assert isinstance(model, AdaptedDiT) and model.config["num_classes"] == 101
    assert model.checkpoint_meta["steps"] == 6 and model.checkpoint_meta["dataset"] == CALTECH
    for name, value in model.trainable_state().items():
        assert torch.equal(value, obj["adapter_weights"][name])


@needs_caltech
def test_the_source_view_is_the_separately_loaded_source_model(lora_run, source):
    model, src = load_dit(lora_run / "ema.pt"), load_dit(source).eval()  # eval: no label dropout
    view = model.source_view()
    x, t = inputs(4)
    null, labels = torch.full((4,), 5), torch.tensor([0, 3, 4, 5])
    with torch.no_grad():
        reference = src(x, t, null)
        assert (view(x, t, null) - reference).norm() <= 1e-6 * reference.norm()  # the source's own null row (5)
        assert (view(x, t, labels) - src(x, t, labels)).norm() <= 1e-6 * src(x, t, labels).norm()
        fine = model(x, t, torch.tensor([0, 50, 100, 101]))
        assert (fine - src(x, t, labels)).abs().max() > 1e-3  # the adapter and the new table do change the model
        mixed = model.forward_mixed(torch.cat([x, x]), torch.cat([t, t]),
                                    torch.cat([torch.tensor([0, 50, 100, 101]), null]), adapted=4)
        assert (mixed[:4] - fine).norm() <= 1e-6 * fine.norm() and (mixed[4:] - reference).norm() <= 1e-6 * reference.norm()
    assert (view.num_classes, view.null_label, view.y_embedder.embedding_table.num_embeddings) == (5, 5, 6)


@needs_caltech
def test_base_found_by_record_or_name_and_refused_on_another_hash(lora_run, source, tmp_path, monkeypatch):
    export = lora_run / "ema.pt"
    with pytest.raises(CheckpointError) as e:
        load_dit(export, base=lora_run / "ema-step3.pt")
    want, got = file_sha256(source), file_sha256(lora_run / "ema-step3.pt")
    assert f"sha256 {want}" in str(e.value) and f"sha256 {got}" in str(e.value) and "\n" not in str(e.value)
    # the recorded base moved away: found by its name in the checkpoint search dirs, else one line naming it
    moved = tmp_path / "moved"
    moved.mkdir()
    obj = torch.load(export, weights_only=True)
    obj["source"] = str(tmp_path / "gone" / source.name)
    from benchmark.io import content_sha256
    del obj["content_sha256"]
    obj["content_sha256"] = content_sha256(obj)
    torch.save(obj, tmp_path / "moved-base.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="gone/source.pt, which is not found; pass that source checkpoint"):
        load_dit(tmp_path / "moved-base.pt")
    shutil.copyfile(source, moved / source.name)
    monkeypatch.setenv("DOGBENCH_CHECKPOINTS", str(moved))
    assert isinstance(load_dit(tmp_path / "moved-base.pt"), AdaptedDiT)
    (moved / source.name).write_bytes(source.read_bytes()[:-8] + b"12345678")  # same name, other bytes
    with pytest.raises(CheckpointError, match=f"sha256 {want}"):
        load_dit(tmp_path / "moved-base.pt")


@needs_caltech
def test_lora_kill_and_resume_reaches_the_same_weights(lora_run, source, tmp_path, monkeypatch):
    from benchmark.training.module import DiffusionTrainer

    real_step = DiffusionTrainer.training_step

    def killed_at_step_4(self, batch, batch_idx):
        if self.global_step == 4:
            raise RuntimeError("killed")
        return real_step(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(DiffusionTrainer, "training_step", killed_at_step_4)
        with pytest.raises(RuntimeError, match="killed"):
            finetune(source, DATA, quiet(tmp_path / "resumed"), SMALL, autoencoder="identity")
    resumed = finetune(source, DATA, quiet(tmp_path / "resumed"), SMALL, autoencoder="identity")
    a = torch.load(lora_run / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6 and a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:  # the adapter, the table and their EMA (LoRA dropout > 0: seeded per step)
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    straight = torch.load(lora_run / "ema.pt", weights_only=True)["adapter_weights"]
    again = torch.load(resumed, weights_only=True)["adapter_weights"]
    assert straight.keys() == again.keys() and all(torch.equal(straight[k], again[k]) for k in straight)


# ---- sampling ----------------------------------------------------------------------------------------------------


def sample(finetuned, pretrained, method, params, guides=None, mixed=False):
    settings = SamplingSettings(steps=3, batch_size=4, guided_channels=None, clip_denoised=True)
    sampler = build_sampler(settings, resolve_method(method, params), 0, finetuned, pretrained, IdentityAutoencoder(),
                            "cpu", guides)
    sampler = mixed_batch(sampler) if mixed else sampler
    return sampler.sample_latents(range(4))[0]


@needs_caltech
def test_dog_with_one_copy_samples_what_two_copies_sample(lora_run, source):
    model = load_dit(lora_run / "ema.pt")
    two_copies = sample(model, load_dit(source), "dog", {"w": 2.0})
    one_copy = sample(model, model.source_view(), "dog", {"w": 2.0})
    assert torch.equal(one_copy, two_copies)
    mixed = sample(model, model.source_view(), "dog", {"w": 2.0}, mixed=True)
    assert (mixed - two_copies).norm() <= 1e-5 * two_copies.norm()
    both = sample(model, model.source_view(), "cfg+dog", {"w_cfg": 1.5, "w_dog": 2.0}, mixed=True)
    assert (both - sample(model, load_dit(source), "cfg+dog", {"w_cfg": 1.5, "w_dog": 2.0})).norm() <= \
        1e-5 * both.norm()  # the fine-tune's two calls and the source's in one mixed forward


@needs_caltech
def test_every_method_runs_with_a_lora_finetune(lora_run):
    model = load_dit(lora_run / "ema.pt")
    weak = load_dit(lora_run / "ema-step3.pt")  # autoguidance's weak guide: an earlier EMA of the same adapter
    unguided = sample(model, None, "none", {})
    for method, params, guides in (("cfg", {"w": 2.0}, None), ("autoguidance", {"w": 2.0}, {"weak": weak}),
                                   ("dog", {"w": 1.0}, None)):
        out = sample(model, model.source_view(), method, params, guides)
        assert torch.isfinite(out).all()
        assert torch.equal(out, unguided) == (params["w"] == 1.0), method


@needs_caltech
def test_sample_command_rebuilds_a_lora_export_on_its_recorded_base(lora_run, source, tmp_path):
    args = ["sample", "--finetuned", str(lora_run / "ema.pt"), "--method", "dog", "--w", "1.5", "--num-samples", "3",
            "--steps", "2", "--batch-size", "3", "--device", "cpu", "--clip-denoised", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "dog")]) == 0  # no --pretrained: the recorded, hash-checked base
    assert main(args + ["--out", str(tmp_path / "dog-named"), "--pretrained", str(source)]) == 0
    a, b = (sorted((tmp_path / d).rglob("*.png")) for d in ("dog", "dog-named"))
    assert len(a) == 3 and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    manifest = json.loads(next((tmp_path / "dog").rglob("manifest.json")).read_text())
    assert manifest["config"]["pretrained_sha256"] == file_sha256(source)


@pytest.mark.slow  # the whole pipeline (reference statistics, every stage) on the tiny experiment
@needs_caltech
def test_an_experiment_with_a_lora_finetune_runs_end_to_end(tiny_experiment):
    path, results = tiny_experiment
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress",
                 "finetune.adapter={kind: lora, rank: 4, alpha: 4}"]) == 0
    runs = pd.read_csv(results / "tiny" / "runs.csv")
    assert {"none", "cfg", "dog"} <= set(runs["method"]) and runs["fd_effnet"].notna().all()
    (export,) = (results / "tiny" / "folder").glob("finetune-*/ema.pt")
    source = path.parent / "source.pt"
    assert export.stat().st_size < 0.5 * source.stat().st_size
    assert isinstance(load_dit(export), AdaptedDiT) and np.isfinite(runs["fd_effnet"]).all()
