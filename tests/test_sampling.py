import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.guidance import resolve_method
from benchmark.models import IdentityAutoencoder, export_checkpoint, reheaded
from benchmark.sampling import (SampleFolder, SamplingSettings, build_sampler, generate_samples, method_spec,
                                sample_inputs, sampler_identity)
from benchmark.sampling.writer import MANIFEST

pytestmark = pytest.mark.usefixtures("one_thread")


def point(method, w, s):
    return method_spec(method, values={"w": w if method != "none" else 1.0}, interval=s.guidance_interval)


def sampler(method, ft, pre, w, steps=5, seed=0, guides=None, **settings):
    s = SamplingSettings(steps=steps, **settings)
    spec = method if not isinstance(method, str) else point(method, w, s)
    return build_sampler(s, spec, seed, ft, pre, IdentityAutoencoder(), "cpu", guides)


def finetuned(tiny_dit, seed=1):
    ft = reheaded(tiny_dit, 3, seed=seed)
    with torch.no_grad():
        ft.y_embedder.embedding_table.weight.normal_(0, 0.5)
    return ft


def test_sample_inputs_do_not_depend_on_batching():
    a = sample_inputs(0, [0, 1, 2, 3], 5, (3, 4, 4), 10)
    b = sample_inputs(0, [2, 3], 5, (3, 4, 4), 10)
    for x, y in zip(a, b):
        assert torch.equal(x[2:], y)
    c = sample_inputs(1, [2, 3], 5, (3, 4, 4), 10)
    assert not torch.equal(b[1], c[1])


# every built-in method, one with the guidance interval, APG on CFG and DoG, a ramp, FDG and CFG-Zero*
SPECS = {
    "none": ("none", {}),
    "cfg": ("cfg", {"w": 2.0}),
    "dog": ("dog", {"w": 2.0}),
    "cfg+dog": ("cfg+dog", {"w_cfg": 1.5, "w_dog": 2.0}),
    "autoguidance": ("autoguidance", {"w": 2.0}),
    "dog-interval": ("dog", {"w": 2.0, "interval": "0,450"}),
    "dog-apg": ("dog", {"w": 3.0, "eta": 0.0, "norm_threshold": 5.0}),
    "cfg-apg": ("cfg", {"w": 3.0, "eta": 0.0}),
    "icg": ("icg", {"w": 2.0}),  # a random other class per sample, from (seed, i): batch and shard independent too
    "dog-fdg-ramp-up": ("dog", {"w": 2.0, "rule": "fdg", "schedule": "ramp-up"}),
    "cfg-zero-star": ("cfg", {"w": 2.0, "rule": "cfg-zero-star"}),
}


def assert_same_up_to_rounding(a, b):
    """Equal up to the network's float rounding. Sample i's label and noise depend only on (seed, i), but this CPU's
    GEMMs round a 2-row batch differently from a 6-row one in the last bit (nn.Linear alone shows it), which the steps
    carry forward (~1e-6 of the latents' scale); samples that leaked into each other would differ at their own scale."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


@pytest.mark.parametrize("case", SPECS)
def test_batch_size_and_sharding_invariance(tiny_dit, tmp_path, case):
    name, params = SPECS[case]
    ft, weak = finetuned(tiny_dit), finetuned(tiny_dit, seed=2)
    made = sampler(resolve_method(name, params), ft, tiny_dit, None, seed=3, guides={"weak": weak})
    whole, labels = made.sample_latents(list(range(6)))
    parts = [made.sample_latents([i, i + 1]) for i in (0, 2, 4)]
    assert_same_up_to_rounding(whole, torch.cat([z for z, _ in parts]))
    assert torch.equal(labels, torch.cat([y for _, y in parts])) and set(labels.tolist()) <= {0, 1, 2}
    # indices split across 2 "ranks" (i % 2 == rank), each in its own batches, give the same images
    images, _ = made.sample(list(range(6)))
    assert images.dtype == np.uint8 and images.shape == (6, 8, 8, 3)
    folder = SampleFolder(tmp_path / "shards", 6, {"case": case}).open()
    for rank in (0, 1):
        generate_samples(made, folder, batch_size=2, rank=rank, world_size=2, progress=False)
    sharded = np.stack([np.asarray(Image.open(folder.path(i))) for i in range(6)]).astype(int)
    differ = np.abs(sharded - images.astype(int))
    assert differ.max() <= 1 and (differ > 0).mean() < 0.01  # a rounding-level latent change can flip one level


def test_methods_differ_and_share_noise(tiny_dit):
    ft = finetuned(tiny_dit)
    runs = {m: sampler(m, ft, tiny_dit, 2.0).sample_latents([0, 1, 2])[0] for m in ("none", "cfg", "dog")}
    assert not torch.allclose(runs["cfg"], runs["dog"]) and not torch.allclose(runs["none"], runs["dog"])
    same = sampler("dog", ft, tiny_dit, 1.0).sample_latents([0, 1, 2])[0]
    assert torch.equal(same, runs["none"])  # w = 1 is fine-tune only


class LegacyDenoiser(torch.nn.Module):
    """The guided denoiser as it was before methods became plug-ins (one guide, w, null label, interval), kept as
    the reference the registry's none / cfg / dog must reproduce bit for bit."""

    def __init__(self, model, guide_model=None, w=1.0, null=None, guided_channels=3, interval=None):
        super().__init__()
        self.model, self.guide_model, self.w, self.null = model, guide_model, w, null
        self.guided_channels, self.interval = guided_channels, interval

    def forward(self, x, t, y):
        if self.w == 1.0:
            return self.model(x, t, y)
        null = torch.full_like(y, self.null)
        if self.interval is not None:
            inside = self.interval.mask(t)
            if not bool(inside.any()):
                return self.model(x, t, y)
        if self.guide_model is self.model:
            cond, uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        else:
            cond, uncond = self.model(x, t, y), self.guide_model(x, t, null)
        eps_guide = uncond[:, : x.shape[1]]
        n = eps_guide.shape[1] if self.guided_channels is None else min(self.guided_channels, eps_guide.shape[1])
        guided = cond[:, :n] + (self.w - 1.0) * (cond[:, :n] - eps_guide[:, :n])
        out = torch.cat([guided, cond[:, n:]], dim=1)
        if self.interval is not None:
            out = torch.where(inside.view(-1, *([1] * (out.dim() - 1))), out, cond)
        return out


@pytest.mark.parametrize("settings", [{}, {"guidance_interval": [300, 700]}, {"guided_channels": None}])
@pytest.mark.parametrize("method, w", [("none", 1.0), ("cfg", 2.0), ("dog", 2.0), ("dog", 1.0), ("cfg", 0.5)])
def test_none_cfg_dog_images_and_identity_are_what_they_were(tiny_dit, method, w, settings):
    ft = finetuned(tiny_dit)
    made = sampler(method, ft, tiny_dit, w, seed=3, steps=4, **settings)
    s = SamplingSettings(steps=4, **settings)
    guide = {"cfg": ft, "dog": tiny_dit}.get(method)
    null = {"cfg": ft.null_label, "dog": tiny_dit.null_label}.get(method)
    legacy = LegacyDenoiser(ft, guide, w if method != "none" else 1.0, null, s.guided_channels, s.interval())
    reference = dataclasses.replace(made, denoiser=legacy)
    assert torch.equal(made.sample_latents(range(5))[0], reference.sample_latents(range(5))[0])
    guided = method != "none" and w != 1.0
    identity = sampler_identity(s, point(method, w, s), 3, finetuned_sha256="f",
                                pretrained_sha256="p", autoencoder="identity")
    assert identity == {
        "method": method if guided else "none", "w": w if guided else 1.0, "finetuned_sha256": "f",
        "pretrained_sha256": "p" if guided and method == "dog" else None, "steps": 4, "seed": 3,
        "guided_channels": s.guided_channels if guided else None,
        "guidance_interval": settings.get("guidance_interval") if guided else None, "clip_denoised": False,
        "autoencoder": "identity", "precision": "tf32", "decode_precision": "tf32"}


def test_identity_of_new_methods_names_their_parameters_and_checkpoints():
    s = SamplingSettings(steps=6)
    ident = lambda spec, **kw: sampler_identity(s, spec, 0, finetuned_sha256="f", pretrained_sha256="p",  # noqa: E731
                                                autoencoder="identity", **kw)
    both = ident(resolve_method("cfg+dog", w_cfg=2.0, w_dog=1.5))
    assert (both["method"], both["w"], both["params"], both["pretrained_sha256"]) == \
        ("cfg+dog", None, {"w_cfg": 2.0, "w_dog": 1.5}, "p")
    auto = ident(resolve_method("autoguidance", w=2.0), guide_sha256={"weak": "k"})
    assert auto["guide_sha256"] == {"weak": "k"} and auto["pretrained_sha256"] is None and "params" not in auto
    apg = ident(resolve_method("dog", w=2.0, eta=0.0))
    assert apg["params"] == {"eta": 0.0, "norm_threshold": 0.0} and apg["method"] == "dog"
    with pytest.raises(ValueError, match="sha256 of guide checkpoint"):
        ident(resolve_method("autoguidance", w=2.0))
    with pytest.raises(ValueError, match="give the interval once"):
        sampler_identity(SamplingSettings(guidance_interval=[0, 500]), resolve_method("dog", w=2.0), 0,
                         finetuned_sha256="f", pretrained_sha256="p", autoencoder="identity")


def test_build_sampler_names_what_a_method_misses(tiny_dit):
    ft = finetuned(tiny_dit)
    with pytest.raises(ValueError, match="needs the pre-trained model; pass --pretrained"):
        sampler("dog", ft, None, 2.0)
    with pytest.raises(ValueError, match="needs the guide checkpoint 'weak'; pass --guide-checkpoint weak=PATH"):
        sampler(resolve_method("autoguidance", w=2.0), ft, None, None)
    with pytest.raises(ValueError, match="the weak model has 5 classes and the fine-tune 3"):
        sampler(resolve_method("autoguidance", w=2.0), ft, None, None, guides={"weak": tiny_dit})
    sampler(resolve_method("autoguidance", w=1.0), ft, None, None)  # unguided: no weak model needed


@pytest.fixture
def checkpoints(tmp_path, tiny_dit):
    ft = reheaded(tiny_dit, 3, seed=1)
    export_checkpoint(ft, tmp_path / "ft.pt", autoencoder="identity")
    export_checkpoint(tiny_dit, tmp_path / "pre.pt", autoencoder="identity")
    return tmp_path / "ft.pt", tmp_path / "pre.pt"


def sample_cmd(ft, pre, out, n=10, *extra, method=("--method", "dog", "--w", "1.5")):
    return ["sample", "--finetuned", str(ft), "--pretrained", str(pre), *method, "--num-samples", str(n),
            "--out", str(out), "--steps", "4", "--batch-size", "4", "--device", "cpu", *extra]


def read_all(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("shard_*/*.png"))])


def test_sample_command_end_to_end_and_resume(tmp_path, checkpoints, monkeypatch):
    ft, pre = checkpoints
    assert main(sample_cmd(ft, pre, tmp_path / "full")) == 0
    full = read_all(tmp_path / "full")
    assert full.shape == (10, 8, 8, 3)

    calls = {"n": 0}
    original = SampleFolder.write

    def dying_write(self, *batch):  # killed after the first batch
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        original(self, *batch)

    monkeypatch.setattr(SampleFolder, "write", dying_write)
    assert main(sample_cmd(ft, pre, tmp_path / "resumed")) == 130
    assert len(list((tmp_path / "resumed").glob("shard_*/*.png"))) == 4
    monkeypatch.setattr(SampleFolder, "write", original)
    assert main(sample_cmd(ft, pre, tmp_path / "resumed")) == 0
    np.testing.assert_array_equal(read_all(tmp_path / "resumed"), full)
    assert '"complete": true' in (tmp_path / "resumed" / MANIFEST).read_text()


def test_sample_command_runs_any_method_with_its_parameters(tmp_path, checkpoints, tiny_dit):
    ft, pre = checkpoints
    weak = tmp_path / "weak.pt"
    export_checkpoint(reheaded(tiny_dit, 3, seed=2), weak, autoencoder="identity")
    runs = {
        "plugin": ["--method", "guidance_plugin:mixed_null", "--w", "2", "--param", "mix=0.25"],
        "cfg": ["--method", "cfg", "--w", "2"],
        "plugin-as-cfg": ["--method", "guidance_plugin:mixed_null", "--w", "2", "--param", "mix=0"],
        "cfg+dog": ["--method", "cfg+dog", "--param", "w_cfg=1.5", "--param", "w_dog=2"],
        "autoguidance": ["--method", "autoguidance", "--w", "2", "--guide-checkpoint", f"weak={weak}"],
        "dog-apg": ["--method", "dog", "--w", "3", "--param", "eta=0", "--guidance-interval", "0,600"],
    }
    for name, flags in runs.items():
        assert main(sample_cmd(ft, pre, tmp_path / name, 4, *flags, method=())) == 0, name
    config = {name: json.loads((tmp_path / name / MANIFEST).read_text())["config"] for name in runs}
    assert config["plugin"]["method"] == "mixed-null" and config["plugin"]["params"] == {"mix": 0.25}
    assert config["plugin"]["method_source"] == "guidance_plugin:mixed_null"
    assert config["cfg+dog"]["params"] == {"w_cfg": 1.5, "w_dog": 2.0} and config["cfg+dog"]["w"] is None
    assert len(config["autoguidance"]["guide_sha256"]["weak"]) == 64
    assert config["dog-apg"]["guidance_interval"] == [0.0, 600.0] and config["dog-apg"]["params"]["eta"] == 0.0
    np.testing.assert_array_equal(read_all(tmp_path / "plugin-as-cfg"), read_all(tmp_path / "cfg"))
    assert not np.array_equal(read_all(tmp_path / "plugin"), read_all(tmp_path / "cfg"))


def test_sample_command_errors(tmp_path, checkpoints, capsys):
    ft, pre = checkpoints

    def error(*extra, pretrained=pre):
        assert main(sample_cmd(ft, pretrained, tmp_path / "o", 4, *extra)) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "outside [0.0, 20.0]" in error("--w", "25")
    assert "not found" in error(pretrained=tmp_path / "missing.pt")
    assert "did you mean 'dog'" in error("--method", "dgo")
    assert "has no parameter w" in error("--method", "cfg+dog")  # --w is in sample_cmd
    assert "did you mean 'eta'" in error("--param", "eat=0")
    assert "must be NAME=VALUE" in error("--param", "eta")
    assert "eta=3 is outside [0, 1]" in error("--param", "eta=3")
    assert "given by --w and by --param" in error("--param", "w=2")
    assert "give it once" in error("--param", "interval=0,500", "--guidance-interval", "0,500")
    assert "--guide-checkpoint weak=PATH" in error("--method", "autoguidance")
    assert "has no guide checkpoint 'waek'" in error("--method", "autoguidance", "--guide-checkpoint", "waek=x.pt")
    assert "does not import" in error("--method", "no_such_module:rule")
    assert main(sample_cmd(ft, pre, tmp_path / "o", 4)) == 0
    capsys.readouterr()
    assert "another config" in error("--steps", "3")  # another config in the same folder
