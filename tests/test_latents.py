"""The latent cache: same distribution as on-the-fly encoding, both flips, resumable, keyed; and training from it."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.data import get_dataset
from benchmark.tracking import WandbSettings
from benchmark.data.latents import LatentDataset, build_latent_cache, cache_for
from benchmark.data.transforms import eval_transform
from benchmark.models import IdentityAutoencoder, KLAutoencoder, load_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vae_dir(tiny_vae_dir):
    return tiny_vae_dir


def make_folder(root, per_class=(4, 3, 3), size=(20, 24), seed=0):
    """A class-per-folder dataset of random non-square RGB images (so the centre crop matters)."""
    rng = np.random.default_rng(seed)
    for c, n in enumerate(per_class):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def images(tmp_path):
    return get_dataset("folder", split="train", root=make_folder(tmp_path / "imgs"))


def test_cache_matches_on_the_fly_encoding(images, vae_dir, tmp_path):
    vae = load_autoencoder(vae_dir)
    cache = build_latent_cache(images, vae, 16, tmp_path / "cache", batch_size=3, chunk_size=4, progress=False)
    assert cache.complete and cache.num_chunks == 3
    mean, std, labels = cache.load()
    assert mean.shape == (len(images), 2, 4, 8, 8) and std.shape == mean.shape
    assert torch.equal(labels, torch.as_tensor(images.labels))

    x = torch.stack([eval_transform(16)(images[i][0]) for i in range(len(images))])
    for flip, xs in enumerate((x, x.flip(-1))):
        ref_mean, ref_std = vae.encode_moments(xs)
        torch.testing.assert_close(mean[:, flip], ref_mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(std[:, flip], ref_std, atol=1e-5, rtol=1e-4)
        assert (std[:, flip] > 0).all()

    # what training draws from the cache is what the VAE's own posterior sample would have been, noise for noise
    data = LatentDataset.from_cache(cache)
    assert len(data) == 2 * len(images)
    for j in (9, 5 + len(images)):  # items of later chunks index the right image and flip
        i, flip = j % len(images), j // len(images)
        assert torch.equal(data[j][0], mean[i, flip]) and torch.equal(data[j][1], std[i, flip])
    j = 2 + len(images)  # image 2, mirrored
    m, s, y = data[j]
    assert y == images.labels[2]
    drawn = m + s * torch.randn(m.shape, generator=torch.Generator().manual_seed(7))
    posterior = vae.vae.encode(x[2:3].flip(-1)).latent_dist
    on_the_fly = posterior.sample(generator=torch.Generator().manual_seed(7))[0] * vae.scale
    torch.testing.assert_close(drawn, on_the_fly, atol=1e-5, rtol=1e-4)


def test_interrupted_build_resumes_at_the_first_missing_chunk(images, vae_dir, tmp_path, monkeypatch):
    vae = load_autoencoder(vae_dir)
    full = build_latent_cache(images, vae, 16, tmp_path / "full", batch_size=2, chunk_size=4, progress=False)

    real = KLAutoencoder.encode_moments
    calls, kill_at = [], [3]

    def flaky(self, x):
        calls.append(len(x))
        if len(calls) == kill_at[0]:  # the first batch of chunk 1: chunk 0 (2 batches) is on disk
            raise RuntimeError("killed")  # stands for a kill: nothing after it runs
        return real(self, x)

    monkeypatch.setattr(KLAutoencoder, "encode_moments", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        build_latent_cache(images, vae, 16, tmp_path / "resumed", batch_size=2, chunk_size=4, progress=False)
    cache = cache_for(images, vae, 16, tmp_path / "resumed", chunk_size=4)
    assert not cache.complete and cache.missing_chunks() == [1, 2]
    assert not [p for p in cache.root.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="incomplete"):
        cache.load()

    calls.clear()
    kill_at[0] = None
    resumed = build_latent_cache(images, vae, 16, tmp_path / "resumed", batch_size=2, chunk_size=4, progress=False)
    assert len(calls) == 3  # chunk 1 (2 batches) and chunk 2 (1 batch) only
    for a, b in zip(full.load(), resumed.load()):
        assert torch.equal(a, b)
    calls.clear()
    build_latent_cache(images, vae, 16, tmp_path / "resumed", batch_size=2, chunk_size=4, progress=False)
    assert calls == []  # complete: nothing to do
    # the harness's form (a dataset name and a VAE spec) finds the same cache
    same = build_latent_cache("folder", str(vae_dir), 16, tmp_path / "resumed", data_root=images.root, chunk_size=4,
                              progress=False)
    assert same.root == resumed.root and calls == []


def test_cache_key_follows_data_resolution_and_vae(images, vae_dir, tmp_path):
    vae = load_autoencoder(vae_dir)
    a = cache_for(images, vae, 16, tmp_path)
    assert a.root == cache_for(images, vae, 16, tmp_path).root
    assert a.root != cache_for(images, vae, 8, tmp_path).root
    other_vae = load_autoencoder(vae_dir)
    with torch.no_grad():
        next(other_vae.parameters()).add_(1.0)
    assert a.root != cache_for(images, other_vae, 16, tmp_path).root
    Image.new("RGB", (20, 24)).save(images.root / "class0" / "extra.png")
    changed = get_dataset("folder", split="train", root=images.root)
    assert a.root != cache_for(changed, vae, 16, tmp_path).root
    with pytest.raises(ValueError, match="nothing to cache"):
        build_latent_cache(images, IdentityAutoencoder(), 16, tmp_path)


def test_latents_command(images, vae_dir, tmp_path, capsys):
    args = ["latents", "--dataset", "folder", "--data-root", str(images.root), "--vae", str(vae_dir),
            "--resolution", "16", "--cache-dir", str(tmp_path / "c"), "--num-workers", "0", "--chunk-size", "4",
            "--no-progress"]
    assert main(args) == 0
    assert "complete" in capsys.readouterr().out
    (root,) = (tmp_path / "c").iterdir()
    assert root.name.startswith("folder-train-16px-tiny-vae-")
    assert sorted(p.name for p in root.iterdir()) == ["chunk-00000.pt", "chunk-00001.pt", "chunk-00002.pt", "manifest.json"]
    assert main(args[:-1] + ["--vae", "identity"]) == 0
    assert "nothing to cache" in capsys.readouterr().out
    assert main(args[:5] + ["--vae", str(tmp_path / "no-such-vae")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["latents", "--dataset", "folder", "--data-root", str(tmp_path / "empty")]) == 1


def test_finetune_in_latent_space_trains_from_the_cache(images, vae_dir, tmp_path):
    from benchmark.models import DiT, export_checkpoint, load_dit
    from benchmark.training import RunOutput, TrainingSet
    from benchmark.training.run import finetune
    from conftest import tiny_dit_config

    torch.manual_seed(0)
    source = DiT(**tiny_dit_config(in_channels=4, input_size=8, num_classes=7))
    export_checkpoint(source, tmp_path / "source.pt", autoencoder=str(vae_dir))
    settings = {"steps": 3, "global_batch_size": 4, "checkpoint_every": 3, "num_workers": 0}
    out = finetune(tmp_path / "source.pt", TrainingSet("folder", images.root, tmp_path / "cache"),
                   RunOutput(tmp_path / "run", wandb=WandbSettings(enabled=False), progress=False), settings,
                   autoencoder=str(vae_dir))
    (cache_root,) = (tmp_path / "cache").iterdir()
    assert cache_root.name.startswith("folder-train-16px-") and (cache_root / "manifest.json").is_file()
    model = load_dit(out)
    assert model.config["num_classes"] == 3 and model.config["in_channels"] == 4
    assert model.checkpoint_meta["autoencoder"] == str(vae_dir) and model.checkpoint_meta["image_size"] == 16

    # a pixel-space source cannot be fine-tuned on latents (and the reverse)
    pixel = DiT(**tiny_dit_config())
    export_checkpoint(pixel, tmp_path / "pixel.pt")
    assert main(["finetune", "--source", str(tmp_path / "pixel.pt"), "--dataset", "folder", "--data-root",
                 str(images.root), "--vae", str(vae_dir), "--out", str(tmp_path / "bad"), "--no-wandb"]) == 1
