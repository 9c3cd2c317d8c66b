"""Bad input, one table: every row is a command line that must fail with exactly one stderr line
``dogbench CMD: error: ...`` holding the expected words (the fix), exit status 1 (2 for argparse usage errors),
no traceback, and nothing lost or half-written. The files the rows need are built once per module.

Placeholders in a row's argv (``{ft}``, ``{out}``, ...) name the ``files`` fixture's entries; ``{tiny}`` is the
tiny experiment of tests/conftest.py. Add rows here for every new way a user can get it wrong."""
import errno
import json
import os
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark.sampling.writer as writer_module
from benchmark.cli import COMMANDS, main
from benchmark.models import DiT, export_checkpoint, load_dit, reheaded
from benchmark.models.adapter import AdapterSettings, with_adapter
from benchmark.sampling.writer import MANIFEST, SampleFolder
from conftest import REPO, flip_weight_bytes, tiny_dit_config

pytestmark = pytest.mark.usefixtures("one_thread")


def pictures(n, seed=0, size=8):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save_pngs(folder, images, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{start + i}.png")
    return folder


def corrupt(path, needle: bytes, value: bytes | None = None):
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0
    if value is None:
        data[at + 5] ^= 0x40
    else:
        data[at:at + len(value)] = value
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    source = DiT(**tiny_dit_config())
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.2)
    ft = reheaded(source, 3, seed=1)
    f = {"root": root, "missing": root / "no-such-thing", "out": root / "new-out"}
    f["ft"], f["pre"] = root / "ft.pt", root / "pre.pt"
    export_checkpoint(ft, f["ft"], autoencoder="identity")
    export_checkpoint(source, f["pre"], autoencoder="identity")
    f["lora"] = root / "lora.pt"  # a LoRA export whose base is pre.pt
    export_checkpoint(with_adapter(load_dit(f["pre"]), 3, AdapterSettings(rank=2), seed=1), f["lora"],
                      autoencoder="identity")
    weight = ft.state_dict()["final_layer.linear.weight"].numpy().tobytes()[:32]
    f["ft_corrupted"] = root / "ft-corrupted.pt"
    shutil.copyfile(f["ft"], f["ft_corrupted"])
    corrupt(f["ft_corrupted"], weight)
    f["nan"] = root / "release-nan.pt"
    torch.save(ft.state_dict(), f["nan"])
    corrupt(f["nan"], weight, struct.pack("<f", float("inf")))
    f["garbage"] = root / "garbage.pt"
    f["garbage"].write_text("this is not a checkpoint\n")
    f["truncated"] = root / "truncated.pt"
    f["truncated"].write_bytes(f["ft"].read_bytes()[: f["ft"].stat().st_size // 2])
    f["not_dit"] = root / "not-dit.pt"
    torch.save({"weight": torch.zeros(3)}, f["not_dit"])
    f["other_size"] = root / "other-size.pt"
    export_checkpoint(DiT(**tiny_dit_config(input_size=16)), f["other_size"], autoencoder="identity")
    f["run_dir"] = root / "finetune-run"
    f["run_dir"].mkdir()
    shutil.copyfile(f["ft"], f["run_dir"] / "ema.pt")
    f["empty"] = root / "empty"
    f["empty"].mkdir()
    f["file"] = root / "file.txt"
    f["file"].write_text("a file, not a folder\n")
    if os.geteuid() == 0:  # root writes anywhere a mode allows; sysfs refuses new entries to everyone
        f["readonly"] = "/sys/dogbench-readonly"
    else:
        f["readonly"] = root / "readonly"
        f["readonly"].mkdir()
        f["readonly"].chmod(0o555)
    f["samples"] = save_pngs(root / "samples", pictures(8, 1))
    f["ref"] = save_pngs(root / "ref", pictures(10, 2))
    f["truncated_samples"] = save_pngs(root / "truncated-samples", pictures(4, 3))
    png = f["truncated_samples"] / "2.png"
    png.write_bytes(png.read_bytes()[:50])
    f["ref_npz"] = root / "ref.npz"
    np.savez(f["ref_npz"], arr_0=pictures(10, 2))
    for name, arrays in {"wrong_key": {"x": pictures(2)}, "float": {"arr_0": pictures(2).astype(np.float32)},
                         "gray": {"arr_0": pictures(2)[..., 0]}, "chw": {"arr_0": pictures(2).transpose(0, 3, 1, 2)},
                         "empty_npz": {"arr_0": pictures(0)}}.items():
        f[name] = root / f"{name}.npz"
        np.savez(f[name], **arrays)
    f["junk_npz"] = root / "junk.npz"
    f["junk_npz"].write_bytes(b"PK\x03\x04 not really a zip")
    partial = SampleFolder(root / "partial-set", 6, {"made": "by dogbench sample"}).open()
    partial.write(range(4), pictures(4, 4))
    f["partial"] = partial.root
    broken = SampleFolder(root / "broken-set", 4, {"made": "by dogbench sample"}).open()
    broken.write(range(4), pictures(4, 5))
    broken.mark_complete()
    data = bytearray(broken.path(1).read_bytes())
    data[-16] ^= 0xFF
    broken.path(1).write_bytes(bytes(data))
    f["broken"] = broken.root
    f["bad_manifest"] = save_pngs(root / "bad-manifest", pictures(3, 6))
    (f["bad_manifest"] / MANIFEST).write_text("{not json")
    f["other_config"] = root / "other-config"
    SampleFolder(f["other_config"], 4, {"method": "cfg", "steps": 99}).open()
    f["fake_inception"] = root / "pt_inception-2015-12-05-6726825d.pth"
    f["fake_inception"].write_bytes(b"not the FID weights")
    f["cache"] = root / "cache"
    # the shipped source with 4 KiB of weight bytes flipped: caught by its hash; and a copy without the hash (as a
    # release file or an old export would be), which only the source probe can refuse
    shipped = REPO / "benchmark" / "assets" / "source_cifar10_dit.pt"
    f["shipped_flipped"] = root / "source-flipped.pt"
    flip_weight_bytes(shipped, f["shipped_flipped"], "blocks.2.mlp.fc1.weight")
    unhashed = torch.load(shipped, weights_only=True)
    unhashed.pop("content_sha256")
    torch.save(unhashed, root / "source-unhashed.pt")
    f["unhashed_flipped"] = root / "source-unhashed-flipped.pt"
    flip_weight_bytes(root / "source-unhashed.pt", f["unhashed_flipped"], "blocks.2.mlp.fc1.weight")
    return f


S = ["sample", "--finetuned", "{ft}", "--pretrained", "{pre}", "--num-samples", "4", "--steps", "2", "--out", "{out}"]
F = ["finetune", "--source", "{pre}", "--dataset", "caltech101-32", "--out", "{out}", "--autoencoder", "identity"]
E = ["evaluate", "--samples", "{samples}", "--reference", "{ref}", "--metrics", "fd_effnet", "--cache-dir", "{cache}"]


def with_(base, *extra, drop=()):
    """``base`` with the flags in ``drop`` (and their values) removed and ``extra`` appended."""
    out, skip = [], False
    for i, a in enumerate(base):
        if skip:
            skip = False
            continue
        if a in drop:
            skip = i + 1 < len(base) and not base[i + 1].startswith("--")
            continue
        out.append(a)
    return out + list(extra)


@pytest.fixture
def full_disk(monkeypatch):
    """The disk fills up while the second PNG is written: half of it lands in its temporary file."""
    calls = {"n": 0}
    original = writer_module._write_file

    def filling(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data)

    monkeypatch.setattr(writer_module, "_write_file", filling)


@pytest.fixture
def source_recorded_with_another_hash(tiny_experiment):
    """The tiny experiment's results folder first used a source file whose sha256 was another."""
    path, results = tiny_experiment
    source = str((path.parent / "source.pt").resolve())
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "sources.json").write_text(json.dumps(
        {source: {"sha256": "0" * 64, "key": "source.checkpoint", "first_used": "2025-01-01 00:00:00"}}))


# (case id, argv for benchmark.cli.main, words the one stderr line must hold[, a fixture that sets the case up])
CASES = [
    # ---- dogbench sample: numbers and devices
    ("sample-batch-size-0", with_(S, "--batch-size", "0"), "--batch-size=0 must be >= 1"),
    ("sample-batch-size-negative", with_(S, "--batch-size", "-1"), "--batch-size=-1 must be >= 1"),
    ("sample-batch-size-text", with_(S, "--batch-size", "many"), "--batch-size: must be a whole number, got 'many'"),
    ("sample-num-samples-0", with_(S, "--num-samples", "0", drop=["--num-samples"]), "--num-samples=0 must be >= 1"),
    ("sample-num-samples-fraction", with_(S, "--num-samples", "2.5", drop=["--num-samples"]),
     "--num-samples: must be a whole number, got 2.5"),
    ("sample-steps-0", with_(S, "--steps", "0", drop=["--steps"]), "--steps=0 must be >= 1"),
    ("sample-w-too-large", with_(S, "--w", "25"), "outside [0.0, 20.0]"),
    ("sample-w-nan", with_(S, "--w", "nan"), "guidance scale w=nan is outside [0.0, 20.0]"),
    ("sample-seed-negative", with_(S, "--seed", "-1"), "--seed=-1 must be >= 0"),
    ("sample-guided-channels-0", with_(S, "--guided-channels", "0"), "--guided-channels=0 must be >= 1"),
    ("sample-guidance-interval-one-number", with_(S, "--guidance-interval", "500"), "guidance"),
    ("sample-device-gpu0", with_(S, "--device", "gpu0"), "--device 'gpu0' is not a torch device; use cpu, cuda"),
    ("sample-device-cuda3", with_(S, "--device", "cuda:3"), "--device cuda:3"),
    ("sample-device-unsupported", with_(S, "--device", "meta"), "--device 'meta' is not supported"),
    ("sample-precision-fp16", with_(S, "--precision", "fp16"), "invalid choice: 'fp16'"),
    # ---- dogbench sample: checkpoints
    ("sample-finetuned-missing", with_(S, "--finetuned", "{missing}", drop=["--finetuned"]), "not found"),
    ("sample-finetuned-folder", with_(S, "--finetuned", "{empty}", drop=["--finetuned"]),
     "is a folder, not a checkpoint file; pass the .pt file"),
    ("sample-finetuned-run-folder", with_(S, "--finetuned", "{run_dir}", drop=["--finetuned"]),
     "finetune-run/ema.pt"),
    ("sample-finetuned-not-torch", with_(S, "--finetuned", "{garbage}", drop=["--finetuned"]),
     "is not a readable PyTorch checkpoint"),
    ("sample-finetuned-truncated", with_(S, "--finetuned", "{truncated}", drop=["--finetuned"]),
     "is not a readable PyTorch checkpoint"),
    ("sample-finetuned-corrupted-bytes", with_(S, "--finetuned", "{ft_corrupted}", drop=["--finetuned"]),
     "ft-corrupted.pt is corrupted: its content hash"),
    ("sample-finetuned-inf-weights", with_(S, "--finetuned", "{nan}", drop=["--finetuned"]),
     "holds NaN/inf weights in final_layer.linear.weight"),
    ("sample-finetuned-not-dit", with_(S, "--finetuned", "{not_dit}", drop=["--finetuned"]), "not a DiT checkpoint"),
    ("sample-finetuned-shipped-source-4KiB-flipped", with_(S, "--finetuned", "{shipped_flipped}", "--method", "none",
                                                           drop=["--finetuned"]),
     "source-flipped.pt is corrupted: its content hash"),
    ("sample-pretrained-shipped-source-4KiB-flipped", with_(S, "--pretrained", "{shipped_flipped}",
                                                            drop=["--pretrained"]), "is corrupted: its content hash"),
    ("sample-pretrained-missing-for-dog", with_(S, drop=["--pretrained"]), "needs --pretrained CKPT"),
    ("sample-pretrained-folder", with_(S, "--pretrained", "{run_dir}", drop=["--pretrained"]), "is a folder"),
    ("sample-pretrained-other-size", with_(S, "--pretrained", "{other_size}", drop=["--pretrained"]),
     "differ in input_size"),
    ("sample-vae-missing", with_(S, "--vae", "{missing}"), "VAE folder {missing} not found; pass a local diffusers AutoencoderKL folder"),
    ("sample-vae-a-file", with_(S, "--vae", "{file}"), "is not a folder; pass a local diffusers AutoencoderKL folder"),
    ("sample-guide-checkpoint-unknown", with_(S, "--method", "autoguidance", "--guide-checkpoint", "waek={ft}"),
     "has no guide checkpoint 'waek'"),
    ("sample-guide-checkpoint-missing-file", with_(S, "--method", "autoguidance", "--guide-checkpoint",
                                                   "weak={missing}"), "not found"),
    # ---- dogbench sample: what to sample
    ("sample-method-typo", with_(S, "--method", "dgo"), "did you mean 'dog'"),
    ("sample-param-malformed", with_(S, "--param", "eta"), "must be NAME=VALUE"),
    ("sample-param-unknown", with_(S, "--param", "eat=0"), "did you mean 'eta'"),
    ("sample-classes-out-of-range", with_(S, "--classes", "0,7"), "--classes 7: the fine-tune has 3 classes (0..2)"),
    ("sample-classes-text", with_(S, "--classes", "cats"), "must be comma-separated class indices"),
    ("sample-classes-negative", with_(S, "--classes", "-1"), "must be comma-separated class indices"),
    ("sample-classes-repeated", with_(S, "--classes", "1,1"), "gives 1 twice"),
    ("sample-classes-empty", with_(S, "--classes", ""), "must be comma-separated class indices"),
    # ---- dogbench sample: guidance rules, combination rules and schedules
    ("sample-rule-unknown", with_(S, "--param", "rule=apgg"), "method dog: unknown rule 'apgg'; did you mean 'apg'"),
    ("sample-schedule-unknown", with_(S, "--param", "schedule=rampup"),
     "method dog: unknown schedule 'rampup'; did you mean 'ramp-up'"),
    ("sample-rule-parameter-without-its-rule", with_(S, "--param", "high_ratio=2"),
     "method dog: parameter high_ratio belongs to rule fdg; add rule=fdg"),
    ("sample-interval-and-ramp", with_(S, "--param", "schedule=ramp-up", "--guidance-interval", "0,500"),
     "give the interval once"),
    ("sample-user-rule-returns-nan", with_(S, "--method", "guidance_plugin:nan_method", "--out", "{root}/rule-nan",
                                           drop=["--out"]),
     "guidance method nan-rule (guidance_plugin:nan_method): rule nan_rule of module guidance_plugin at sampling step "
     "1 of 2 (t=999) returned NaN/inf; make the rule return finite values"),
    ("sample-user-rule-raises", with_(S, "--method", "guidance_plugin:raising_method", "--out", "{root}/rule-raises",
                                      drop=["--out"]),
     "rule raising_rule of module guidance_plugin at sampling step 1 of 2 (t=999) raised KeyError: 'uncond'; fix the "
     "rule"),
    ("sample-user-rule-wrong-shape", with_(S, "--method", "guidance_plugin:wrong_shape_method", "--out",
                                           "{root}/rule-shape", drop=["--out"]),
     "rule wrong_shape_rule of module guidance_plugin at sampling step 1 of 2 (t=999) returned shape (4, 192); "
     "return a tensor shaped like eps_cond"),
    # ---- dogbench sample: where it goes
    ("sample-out-is-a-file", with_(S, "--out", "{file}", drop=["--out"]), "is a file, not a folder"),
    ("sample-out-read-only", with_(S, "--out", "{readonly}", drop=["--out"]), "is not writable"),
    ("sample-out-holds-another-config", with_(S, "--out", "{other_config}", drop=["--out"]),
     "holds samples of another config"),
    ("sample-out-under-a-file", with_(S, "--out", "{file}/sub", drop=["--out"]), "is not writable"),
    ("sample-disk-full", with_(S, "--out", "{root}/disk-full", drop=["--out"]),
     "cannot write samples to {root}/disk-full (the disk is full); free some space and rerun the same command",
     "full_disk"),
    ("sample-required-flags", ["sample", "--out", "{out}"], "the following arguments are required: --finetuned"),
    ("sample-unknown-flag", with_(S, "--sampels", "4"), "unrecognized arguments: --sampels"),
    # ---- dogbench evaluate: numbers and devices
    ("evaluate-batch-size-0", with_(E, "--batch-size", "0"), "--batch-size=0 must be >= 1"),
    ("evaluate-batch-size-negative", with_(E, "--batch-size", "-1"), "--batch-size=-1 must be >= 1"),
    ("evaluate-max-reference-images-0", with_(E, "--max-reference-images", "0"), "--max-reference-images=0 must be"),
    ("evaluate-num-workers-negative", with_(E, "--num-workers", "-2"), "--num-workers must be 0 or more"),
    ("evaluate-device-gpu0", with_(E, "--device", "gpu0"), "--device 'gpu0' is not a torch device"),
    ("evaluate-device-cuda3", with_(E, "--device", "cuda:3"), "--device cuda:3"),
    # ---- dogbench evaluate: metrics and weights
    ("evaluate-metric-unknown", with_(E, "--metrics", "fid,is", drop=["--metrics"]), "unknown metric 'is'"),
    ("evaluate-metric-typo", with_(E, "--metrics", "fd_efnet", drop=["--metrics"]), "did you mean 'fd_effnet'"),
    ("evaluate-metric-twice", with_(E, "--metrics", "fd_effnet,fd_effnet", drop=["--metrics"]), "twice"),
    ("evaluate-metrics-empty", with_(E, "--metrics", "", drop=["--metrics"]), "--metrics: is empty; give at least one of"),
    ("evaluate-inception-weights-missing", with_(E, "--metrics", "fid", "--inception-weights", "{missing}",
                                                 drop=["--metrics"]), "--inception-weights"),
    ("evaluate-inception-weights-corrupted", with_(E, "--metrics", "fid", "--inception-weights", "{fake_inception}",
                                                   drop=["--metrics"]), "is corrupted: its sha256 starts"),
    ("evaluate-dinov2-hub-dir-empty", with_(E, "--metrics", "fd_dinov2", "--dinov2-hub-dir", "{empty}",
                                            drop=["--metrics"]), "has no hubconf.py"),
    # ---- dogbench evaluate: the samples
    ("evaluate-samples-missing", with_(E, "--samples", "{missing}", drop=["--samples"]), "does not exist"),
    ("evaluate-samples-empty-folder", with_(E, "--samples", "{empty}", drop=["--samples"]), "no images (png, jpg"),
    ("evaluate-samples-a-text-file", with_(E, "--samples", "{file}", drop=["--samples"]),
     "is a file, not a folder or .npz"),
    ("evaluate-samples-npz-wrong-key", with_(E, "--samples", "{wrong_key}", drop=["--samples"]),
     "holds x, not arr_0 or images"),
    ("evaluate-samples-npz-float", with_(E, "--samples", "{float}", drop=["--samples"]), "not uint8 (N, H, W, 3)"),
    ("evaluate-samples-npz-gray", with_(E, "--samples", "{gray}", drop=["--samples"]), "not uint8 (N, H, W, 3)"),
    ("evaluate-samples-npz-channels-first", with_(E, "--samples", "{chw}", drop=["--samples"]),
     "convert it: x.transpose(0, 2, 3, 1) for channels first"),
    ("evaluate-samples-npz-no-images", with_(E, "--samples", "{empty_npz}", drop=["--samples"]), "N >= 1"),
    ("evaluate-samples-npz-junk", with_(E, "--samples", "{junk_npz}", drop=["--samples"]), "is not a readable .npz"),
    ("evaluate-samples-truncated-png", with_(E, "--samples", "{truncated_samples}", drop=["--samples"]),
     "2.png cannot be decoded"),
    ("evaluate-samples-incomplete-set", with_(E, "--samples", "{partial}", drop=["--samples"]),
     "4 of 6 images intact, the manifest says sampling did not finish, 2 missing"),
    ("evaluate-samples-corrupted-set", with_(E, "--samples", "{broken}", drop=["--samples"]),
     "1 corrupted (e.g. shard_000/000001.png: its sha256 differs"),
    ("evaluate-samples-unreadable-manifest", with_(E, "--samples", "{bad_manifest}", drop=["--samples"]),
     "manifest.json is unreadable"),
    ("evaluate-no-samples", with_(E, drop=["--samples"]), "pass --samples PATH"),
    # ---- dogbench evaluate: the reference
    ("evaluate-reference-missing", with_(E, "--reference", "{missing}", drop=["--reference"]),
     "--reference {missing} does not exist"),
    ("evaluate-reference-empty", with_(E, "--reference", "{empty}", drop=["--reference"]),
     "pass --reference a folder"),
    ("evaluate-reference-npz-wrong-key", with_(E, "--reference", "{wrong_key}", drop=["--reference"]),
     "--reference {wrong_key} holds x"),
    ("evaluate-dataset-unknown", with_(E, "--dataset", "imagenet", drop=["--reference"]), "unknown dataset 'imagenet'"),
    ("evaluate-dataset-and-reference", with_(E, "--dataset", "caltech101-32"), "not allowed with argument"),
    ("evaluate-no-reference", with_(E, drop=["--reference"]), "one of the arguments --dataset --reference is required"),
    ("evaluate-data-root-missing", with_(E, "--dataset", "caltech101-32", "--data-root", "{missing}",
                                         drop=["--reference"]), "data root {missing} (from --data-root"),
    ("evaluate-data-root-a-file", with_(E, "--dataset", "caltech101-32", "--data-root", "{file}",
                                        drop=["--reference"]), "is a file, not a folder"),
    ("evaluate-ref-split-with-reference", with_(E, "--ref-split", "train"), "--ref-split train needs --dataset"),
    ("evaluate-ref-split-unknown", with_(E, "--dataset", "caltech101-32", "--ref-split", "val", drop=["--reference"]),
     "invalid choice: 'val'"),
    # ---- dogbench evaluate: the real-data floor and the output
    ("evaluate-num-real-without-real", with_(E, "--num-real", "3"), "--num-real 3: needs --real"),
    ("evaluate-num-real-0", with_(E, "--real", "--num-real", "0"), "--num-real 0: must be 1 or more"),
    ("evaluate-num-real-too-many", with_(E, "--real", "--num-real", "50"), "has 10 images, fewer than the 50"),
    ("evaluate-out-is-a-folder", with_(E, "--out", "{empty}"), "is a folder; pass a file path"),
    ("evaluate-out-read-only", with_(E, "--out", "{readonly}/metrics.json"), "is not writable"),
    ("evaluate-unknown-flag", with_(E, "--max-images", "10"), "unrecognized arguments: --max-images"),
    # ---- dogbench evaluate: the metric card's inputs
    ("evaluate-copy-without-train", with_(E, "--metrics", "copy_effnet", drop=["--metrics"]), "pass --train DIR|NPZ"),
    ("evaluate-class-kid-without-labels", with_(E, "--metrics", "class_kid_effnet", drop=["--metrics"]),
     "needs each sample's class"),
    ("evaluate-cmmd-clip-weights-missing", with_(E, "--metrics", "cmmd", "--clip-weights", "{missing}",
                                                 drop=["--metrics"]), "--clip-weights {missing} does not exist"),
    ("evaluate-bootstrap-negative", with_(E, "--bootstrap", "-1"), "--bootstrap -1 --level 0.95"),
    ("evaluate-exp-dataset-unknown", with_(E, "--exp", "{tiny}", "--dataset", "birds", drop=["--reference"]),
     "--dataset birds is not a dataset of experiment tiny"),
    # ---- other commands, through the code above (checkpoints, data roots)
    ("finetune-source-is-a-folder", ["finetune", "--source", "{run_dir}", "--dataset", "caltech101-32", "--out",
                                     "{out}", "--autoencoder", "identity"], "finetune-run/ema.pt"),
    ("finetune-source-corrupted", ["finetune", "--source", "{ft_corrupted}", "--dataset", "caltech101-32", "--out",
                                   "{out}", "--autoencoder", "identity"], "is corrupted"),
    # ---- dogbench finetune: the source is read first, and the autoencoder defaults to the one it records
    ("finetune-shipped-source-4KiB-flipped", ["finetune", "--source", "{shipped_flipped}", "--dataset", "caltech101-32",
                                              "--out", "{out}", "--no-wandb"],
     "source-flipped.pt is corrupted: its content hash"),
    ("finetune-source-finite-but-broken", ["finetune", "--source", "{unhashed_flipped}", "--dataset", "caltech101-32",
                                           "--out", "{out}", "--no-wandb", "--no-progress"],
     "source-unhashed-flipped.pt does not denoise caltech101-32"),
    ("finetune-source-a-text-file", ["finetune", "--source", "{garbage}", "--dataset", "caltech101-32", "--out",
                                     "{out}"], "garbage.pt is not a readable PyTorch checkpoint"),
    ("finetune-source-missing-no-vae-named", ["finetune", "--source", "{missing}", "--dataset", "caltech101-32",
                                              "--out", "{out}"], "checkpoint {missing} not found"),
    ("finetune-out-is-a-file", ["finetune", "--source", "{shipped_flipped}", "--dataset", "caltech101-32", "--out",
                                "{file}"], "--out {file} is a file, not a folder"),
    ("finetune-out-read-only", ["finetune", "--source", "{pre}", "--dataset", "caltech101-32", "--out",
                                "{readonly}/run"], "is not writable"),
    # ---- LoRA fine-tunes: a bad adapter spec before anything runs; an adapter on another base
    ("finetune-adapter-unknown-kind", with_(F, "--adapter", "{{kind: lorax}}"), "--adapter kind='lorax' is not one of lora"),
    ("finetune-adapter-rank-0", with_(F, "--adapter", "{{rank: 0}}"), "--adapter rank=0 must be >= 1"),
    ("finetune-adapter-target-matches-nothing", with_(F, "--adapter", "{{targets: [attn.qvk]}}"),
     "'attn.qvk' matches no Linear layer of a DiT; did you mean 'attn.qkv'?"),
    ("finetune-adapter-block-beyond-depth", with_(F, "--adapter", "{{targets: [blocks.9]}}"),
     "'blocks.9' matches no Linear layer of the source DiT (depth 2)"),
    ("finetune-adapter-not-a-mapping", with_(F, "--adapter", "[4, 4]"), "--adapter: must be a mapping"),
    ("pretrain-adapter", ["pretrain", "--model", "DiT-N/4", "--dataset", "caltech101-32", "--out", "{out}",
                          "--adapter", "lora"], "an adapter applies to fine-tunes only"),
    ("run-adapter-rank-0", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "finetune.adapter.rank=0"],
     "finetune.adapter.rank=0 must be >= 1"),
    ("sample-lora-on-another-base", with_(S, "--finetuned", "{lora}", "--pretrained", "{ft}",
                                          drop=["--finetuned", "--pretrained"]), "is a LoRA adapter of a base with sha256"),
    ("latents-data-root-missing", ["latents", "--dataset", "caltech101-32", "--data-root", "{missing}", "--vae",
                                   "identity-is-not-this"], "data root {missing}"),
    ("run-data-root-missing", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "data_root={missing}",
                               "--no-progress"], "data root {missing}"),
    ("run-copy-rate-without-held-out-images", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                               "finetune.split=all", "evaluation.metrics=[fd_effnet,copy_effnet]",
                                               "evaluation.select_by=fd_effnet"],
     "needs real images the model was not fine-tuned on, but finetune.split=all fine-tunes on every image; set "
     "finetune.split=train"),
    ("run-w-grid-empty", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "w_grid=[]"],
     "w_grid: is empty; give at least one value"),
    ("run-method-grid-empty", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                               "methods=[none, {{name: cfg, grid: {{w: []}}}}]"], "methods[1].grid.w: is empty"),
    ("run-method-dict-module-not-importable", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                               "methods=[none, cfg, {{name: 'nomodule:my_rule'}}]"],
     "methods[2].name: guidance method 'nomodule:my_rule': module 'nomodule' does not import"),
    ("run-random-source-refused-by-the-probe", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                                "source.sanity_check=true", "--no-progress"],
     "does not denoise folder"),
    ("run-results-root-a-file", ["run", "--exp", "{tiny}", "--results-root", "{file}"],
     "--results-root {file}: {file} is a file, not a folder"),
    ("run-results-root-under-a-file", ["run", "--exp", "{tiny}", "--results-root", "{file}/results"],
     "is a file, not a folder"),
    ("run-results-root-read-only", ["run", "--exp", "{tiny}", "--results-root", "{readonly}"], "is not writable"),
    ("run-source-changed-since-first-use", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                            "--no-progress"],
     "has changed since", "source_recorded_with_another_hash"),
    ("sweep-storage-cannot-be-opened", ["sweep", "--exp", "{tiny}", "--results-root", "{tiny_results}", "--dataset",
                                        "folder", "--storage", "sqlite:////proc/dogbench-x/sweep.db", "--no-progress"],
     "proc/dogbench-x/sweep.db"),
    ("sweep-results-root-a-file", ["sweep", "--exp", "{tiny}", "--results-root", "{file}", "--dataset", "folder"],
     "is a file, not a folder"),
    ("run-datasets-empty", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "--datasets", ","],
     "--datasets ',' names no dataset"),
    ("run-device-gpu0", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "--device", "gpu0"],
     "--device 'gpu0' is not a torch device"),
    # ---- several fine-tunes in one experiment (finetunes:)
    ("run-finetunes-unknown-variant", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                       "finetunes={{full: {{}}, lora-r2: {{adapter: {{kind: lora, rank: 2}}}}}}",
                                       "--finetunes", "lora-r3"],
     "--finetunes lora-r3 not in experiment tiny; did you mean 'lora-r2'?"),
    ("run-finetunes-flag-without-variants", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                             "--finetunes", "full"], "experiment tiny has no finetunes"),
    ("run-finetunes-empty-mapping", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}", "finetunes={{}}"],
     "finetunes is empty; name at least one variant"),
    ("run-finetunes-bad-adapter", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                   "finetunes={{full: {{}}, r0: {{adapter: {{kind: lora, rank: 0}}}}}}"],
     "finetunes.r0.adapter.rank=0 must be >= 1"),
    ("run-finetunes-unknown-adapter-kind", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                            "finetunes={{x: {{adapter: {{kind: lorax}}}}}}"],
     "finetunes.x.adapter.kind='lorax' is not one of lora"),
    ("run-finetunes-adapter-target-misspelt", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                               "finetunes={{full: {{}}, q: {{adapter: {{targets: [attn.qvk]}}}}}}"],
     "finetunes.q.adapter.targets: adapter target 'attn.qvk' matches no Linear layer of a DiT; did you mean"),
    # a later variant's target the source lacks: before the first variant's fine-tune starts (nothing is written)
    ("run-finetunes-adapter-block-beyond-depth", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                                  "finetunes={{full: {{}}, q: {{adapter: {{targets: [blocks.9]}}}}}}"],
     "finetunes.q.adapter.targets: 'blocks.9' matches no Linear layer of the source DiT"),
    ("sweep-finetunes-several", ["sweep", "--exp", "{tiny}", "--results-root", "{tiny_results}", "--dataset", "folder",
                                 "finetunes={{a: {{}}, b: {{lr: 0.001}}}}"],
     "dogbench sweep runs one fine-tune; experiment tiny has 2 finetunes (a, b)"),
    ("finetune-config-with-several-finetunes", ["finetune", "--config", "lora", "--dataset", "caltech101-32", "--out",
                                                "{out}"], "dogbench finetune --config runs one fine-tune; experiment "
                                                          "lora has 3 finetunes (full, lora-r4, lora-r16)"),
    # ---- a factorised design (design:)
    ("run-design-unknown-negative", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                     "design={{negative: [cfg, dgo]}}"],
     "design: unknown negative 'dgo'; did you mean 'dog'?"),
    ("run-design-unknown-rule", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                 "design={{negative: [dog], rule: [apj]}}"], "design: unknown rule 'apj'"),
    ("run-design-unguided-negative", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                                      "design={{negative: [none]}}"], "design: negative 'none' has no guide"),
    ("run-design-empty-axis", ["run", "--exp", "{tiny}", "--results-root", "{tiny_results}",
                               "design={{negative: [dog], schedule: []}}"], "design: schedule is empty"),
    ("methods-plugin-missing", ["methods", "no_such_module:rule"], "module 'no_such_module' does not import"),
    ("methods-plugin-not-a-method", ["methods", "guidance_plugin:not_a_method"], "is a int, not a"),
    ("no-command-typo", ["sampel"], "invalid choice: 'sampel'"),
]


def fill(argv, values):
    return [a.format(**values) for a in argv]


@pytest.mark.parametrize("case, argv, expected, setup", [(*c, None)[:4] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, argv, expected, setup, files, request, capsys):
    if setup:
        request.getfixturevalue(setup)
    values = {k: str(v) for k, v in files.items()}
    if any("{tiny}" in a for a in argv):
        values["tiny"], values["tiny_results"] = map(str, request.getfixturevalue("tiny_experiment"))
    before = sorted(p.relative_to(files["root"]) for p in files["root"].rglob("*"))
    try:
        code = main(fill(argv, values))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    command = next((a for a in argv if not a.startswith("-")), "")
    prefix = f"dogbench {command}: error: " if command in COMMANDS else "dogbench: error: "
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert code == (2 if any(w in expected for w in ARGPARSE_WORDS) else 1), (code, err)
    assert lines[0].startswith(prefix) and expected.format(**values) in lines[0], err
    after = sorted(p.relative_to(files["root"]) for p in files["root"].rglob("*"))
    assert [p for p in after if p.name.endswith(".tmp")] == []  # nothing half-written
    assert not set(before) - set(after)  # nothing the user had is gone


ARGPARSE_WORDS = ("invalid choice", "unrecognized arguments", "are required", "not allowed with", "is required")


def test_the_table_is_large_and_its_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
