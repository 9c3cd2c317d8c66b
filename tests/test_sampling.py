import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.models import IdentityAutoencoder, export_checkpoint, reheaded
from benchmark.sampling import SampleFolder, SamplingSettings, build_sampler, sample_inputs
from benchmark.sampling.writer import MANIFEST


def sampler(method, ft, pre, w, steps=5, seed=0):
    return build_sampler(SamplingSettings(steps=steps), method, w, seed, ft, pre, IdentityAutoencoder(), "cpu")


def test_sample_inputs_do_not_depend_on_batching():
    a = sample_inputs(0, [0, 1, 2, 3], 5, (3, 4, 4), 10)
    b = sample_inputs(0, [2, 3], 5, (3, 4, 4), 10)
    for x, y in zip(a, b):
        assert torch.equal(x[2:], y)
    c = sample_inputs(1, [2, 3], 5, (3, 4, 4), 10)
    assert not torch.equal(b[1], c[1])


@pytest.mark.parametrize("method", ["none", "cfg", "dog"])
def test_batch_size_invariance(tiny_dit, method):
    pre = tiny_dit
    ft = reheaded(tiny_dit, 3, seed=1)
    with torch.no_grad():
        ft.y_embedder.embedding_table.weight.normal_(0, 0.5)
    made = sampler(method, ft, pre, 2.0, seed=3)
    whole, labels = made.sample(list(range(6)))
    parts = [made.sample([i, i + 1])[0] for i in (0, 2, 4)]
    assert whole.dtype == np.uint8 and whole.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert set(labels.tolist()) <= {0, 1, 2}


def test_methods_differ_and_share_noise(tiny_dit):
    ft = reheaded(tiny_dit, 3, seed=1)
    with torch.no_grad():
        ft.y_embedder.embedding_table.weight.normal_(0, 0.5)
    runs = {m: sampler(m, ft, tiny_dit, 2.0).sample_latents([0, 1, 2])[0] for m in ("none", "cfg", "dog")}
    assert not torch.allclose(runs["cfg"], runs["dog"]) and not torch.allclose(runs["none"], runs["dog"])
    same = sampler("dog", ft, tiny_dit, 1.0).sample_latents([0, 1, 2])[0]
    assert torch.equal(same, runs["none"])  # w = 1 is fine-tune only


@pytest.fixture
def checkpoints(tmp_path, tiny_dit):
    ft = reheaded(tiny_dit, 3, seed=1)
    export_checkpoint(ft, tmp_path / "ft.pt", autoencoder="identity")
    export_checkpoint(tiny_dit, tmp_path / "pre.pt", autoencoder="identity")
    return tmp_path / "ft.pt", tmp_path / "pre.pt"


def sample_cmd(ft, pre, out, n=10, *extra):
    return ["sample", "--finetuned", str(ft), "--pretrained", str(pre), "--method", "dog", "--w", "1.5",
            "--num-samples", str(n), "--out", str(out), "--steps", "4", "--batch-size", "4", "--device", "cpu", *extra]


def read_all(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("shard_*/*.png"))])


def test_sample_command_end_to_end_and_resume(tmp_path, checkpoints, monkeypatch):
    ft, pre = checkpoints
    assert main(sample_cmd(ft, pre, tmp_path / "full")) == 0
    full = read_all(tmp_path / "full")
    assert full.shape == (10, 8, 8, 3)

    calls = {"n": 0}
    original = SampleFolder.write

    def dying_write(self, indices, images):  # killed after the first batch
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        original(self, indices, images)

    monkeypatch.setattr(SampleFolder, "write", dying_write)
    assert main(sample_cmd(ft, pre, tmp_path / "resumed")) == 130
    assert len(list((tmp_path / "resumed").glob("shard_*/*.png"))) == 4
    monkeypatch.setattr(SampleFolder, "write", original)
    assert main(sample_cmd(ft, pre, tmp_path / "resumed")) == 0
    np.testing.assert_array_equal(read_all(tmp_path / "resumed"), full)
    assert '"complete": true' in (tmp_path / "resumed" / MANIFEST).read_text()


def test_sample_command_errors(tmp_path, checkpoints, capsys):
    ft, pre = checkpoints
    assert main(sample_cmd(ft, pre, tmp_path / "o", 4, "--w", "25")) == 1
    assert "outside [0.0, 20.0]" in capsys.readouterr().err
    assert main(sample_cmd(ft, tmp_path / "missing.pt", tmp_path / "o", 4)) == 1
    assert "not found" in capsys.readouterr().err
    assert main(sample_cmd(ft, pre, tmp_path / "o", 4)) == 0
    capsys.readouterr()
    assert main(sample_cmd(ft, pre, tmp_path / "o", 4, "--steps", "3")) == 1  # another config in the same folder
    err = capsys.readouterr().err
    assert "another config" in err and len(err.strip().splitlines()) == 1
