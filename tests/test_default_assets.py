"""The embedded default benchmark: its config loads and everything it needs ships with the repository."""
import torch

from benchmark.data import get_dataset
from benchmark.harness.loading import load_experiment
from benchmark.guidance import resolve_method
from benchmark.models import IdentityAutoencoder, load_dit
from benchmark.sampling import SamplingSettings, build_sampler


def test_default_experiment_assets_are_present_and_load(tmp_path, one_thread):
    exp = load_experiment("default")
    source = load_dit(exp.source_checkpoint(), model=exp.source.model, num_classes=exp.source.num_classes,
                      input_size=exp.source.image_size, in_channels=3)
    assert source.checkpoint_meta["autoencoder"] == "identity" and source.checkpoint_meta["steps"] > 0
    for dataset in exp.datasets:  # found with an empty data root: the pack in benchmark/assets/data
        assert len(get_dataset(dataset, split="all", root=tmp_path)) > 0
    with torch.no_grad():  # the source model samples images (2 images, 3 steps: a smoke check, not a quality one)
        settings = SamplingSettings(steps=3, clip_denoised=True)
        made = build_sampler(settings, resolve_method("none"), 0, source, None, IdentityAutoencoder(), "cpu")
        images, labels = made.sample([0, 1])
    assert images.shape == (2, 32, 32, 3) and images.std() > 0
