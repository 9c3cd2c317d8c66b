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


def test_the_run_draws_one_figure_per_report_set_against_the_fine_tuning_split(tmp_path):
    """neighbour_figures on the shipped 32x32 Caltech-101 train split: the samples of a report set are copies of
    train images 3, 7 and 9, so those pairs come first at distance 0 (the features are the train images' own)."""
    import pandas as pd

    from benchmark.data import get_dataset
    from benchmark.harness.loading import load_experiment
    from benchmark.harness.neighbours import neighbour_figures
    from benchmark.metrics.card import SampleSetCard, SpaceInputs
    from benchmark.metrics.splits import SplitFeatures
    from benchmark.sampling.writer import SampleFolder

    exp = load_experiment("default", ["evaluation.metrics=[fd_effnet,copy_effnet]"])  # the default has it too
    train = get_dataset(exp.dataset("caltech101-32"), split="train", root=exp.data_dir())
    rng = np.random.default_rng(0)
    rows = np.arange(40)
    train_features = rng.normal(size=(40, 5)).astype(np.float32)
    split = lambda f: SplitFeatures(f, np.zeros(len(f), np.int64), np.arange(len(f)), {})  # noqa: E731
    inputs = SpaceInputs(train=SplitFeatures(train_features, np.zeros(40, np.int64), rows, {}),
                         held_out=split(rng.normal(size=(40, 5)).astype(np.float32)))
    copied = [3, 7, 9]
    folder = SampleFolder(tmp_path / "caltech101-32" / "samples" / "dog-w1.5-seed1-abc", 3, {"x": 1}).open()
    folder.write(range(3), np.stack([np.asarray(train[i][0].convert("RGB")) for i in copied]), [0, 1, 2])
    folder.mark_complete()
    card = SampleSetCard(["copy_effnet"], {"effnet": train_features[copied]}, {"effnet": inputs})
    report = pd.DataFrame([{"dataset": "caltech101-32", "phase": "report", "num_samples": 3,
                            "sample_dir": "caltech101-32/samples/dog-w1.5-seed1-abc"}])
    figures = neighbour_figures(exp, tmp_path, report, lambda row: card)
    path = figures["neighbours_caltech101-32_dog-w1.5-seed1-abc"]
    assert path == tmp_path / "plots" / "neighbours_caltech101-32_dog-w1.5-seed1-abc.png" and path.is_file()
    assert card()["copy_effnet"] == 1.0
    # no copy rate among the metrics: no figure
    assert neighbour_figures(load_experiment("default", ["evaluation.metrics=[fd_effnet]"]), tmp_path, report,
                             lambda row: card) == {}
