import pytest
import torch

from benchmark.models import IdentityAutoencoder, KLAutoencoder, load_autoencoder
from benchmark.models.autoencoder import SD_VAE_SCALE


def test_identity():
    ae = load_autoencoder("identity")
    assert isinstance(ae, IdentityAutoencoder)
    x = torch.rand(2, 3, 8, 8)
    mean, std = ae.encode_moments(x)
    assert torch.equal(mean, x) and not std.any() and torch.equal(ae.decode(x), x)


def test_kl_autoencoder_from_local_dir(tiny_vae_dir):
    ae = load_autoencoder(tiny_vae_dir)
    assert isinstance(ae, KLAutoencoder) and ae.downsample == 2 and ae.latent_channels() == 4
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = ae.encode_moments(x)
    dist = ae.vae.encode(x).latent_dist
    assert torch.allclose(mean, dist.mean * SD_VAE_SCALE) and torch.allclose(std, dist.std * SD_VAE_SCALE)
    assert ae.decode(mean).shape == (2, 3, 16, 16)


def test_missing_vae_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="hf download stabilityai/sd-vae-ft-ema config.json") as e:
        load_autoencoder("sd-vae-ft-ema")
    assert "\n" not in str(e.value)
