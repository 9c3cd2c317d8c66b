"""The nearest-neighbour figure on tiny data: samples beside their closest fine-tuning images, closest first."""
import numpy as np
import pytest
from PIL import Image

from benchmark.harness.neighbours import plot_nearest_neighbours
from benchmark.metrics.memorization import closest_pairs


def test_a_grid_of_samples_beside_their_nearest_training_images(tmp_path):
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    train_features = rng.normal(size=(6, 4))
    # sample 1 copies train image 4; sample 0 is near train image 2; sample 2 is far from everything
    features = np.stack([train_features[2] + 0.3, train_features[4], train_features[0] + 5.0])
    samples = np.stack([train_images[2], train_images[4], train_images[0]])
    rows = np.array([10, 11, 12, 13, 14, 15])  # the train features' rows in their split
    pairs = closest_pairs(features, train_features, k=2, rows=rows)
    assert [p["sample"] for p in pairs] == [1, 0, 2] and pairs[0]["neighbours"][0] == 14
    assert pairs[0]["distances"][0] == pytest.approx(0.0, abs=1e-6)

    split = np.concatenate([np.zeros((10, 8, 8, 3), np.uint8), train_images])  # the split: image i at index i
    path = plot_nearest_neighbours(samples, split, pairs,
                                   tmp_path / "plots" / "neighbours.png", threshold=0.1, title="dog w=1.5",
                                   space="EfficientNet-Lite0")
    with Image.open(path) as figure:
        assert figure.size[0] > 100 and figure.size[1] > 3 * 50  # three rows of (sample + 2 neighbours)
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["neighbours.png"]  # written atomically
    with pytest.raises(ValueError, match="no pairs"):
        plot_nearest_neighbours(samples, train_images, [], tmp_path / "x.png")
