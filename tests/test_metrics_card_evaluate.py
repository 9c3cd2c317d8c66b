"""The metric card through evaluate_samples: the fine-tuning and held-out splits' features cached like the
reference statistics, labels cached with the sample features, the card rebuilt from those files (what the
leaderboard reads) equal to the recorded values, and the copy rate of copies of training images."""
import json

import numpy as np
import pytest
from PIL import Image

from benchmark.metrics import evaluate_samples
from benchmark.metrics.card import CardFiles
from benchmark.metrics.evaluate import load_sample_labels
from benchmark.metrics.splits import load_split_features
from test_metrics_evaluate import tiny_network

pytestmark = pytest.mark.usefixtures("one_thread")
CARD = ["fd_effnet", "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet", "prdc_effnet"]


def pictures(n, seed, tint):
    rng = np.random.default_rng(seed)
    base = np.array(tint, dtype=float)[None, None, None, :] + rng.uniform(-40, 40, size=(n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 25, size=(n, 16, 16, 3)), 0, 255).astype(np.uint8)


TINTS = ((200, 60, 60), (60, 200, 60), (60, 60, 200))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A registered `folder` dataset with train and test splits of three coloured classes."""
    root = tmp_path_factory.mktemp("card") / "data"
    for split, n in (("train", 12), ("test", 10)):
        for c, tint in enumerate(TINTS):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i, image in enumerate(pictures(n, 100 * c + n, tint)):
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


def kwargs(data, tmp_path, **more):
    return dict(networks={"effnet": tiny_network()}, data_root=data, cache_dir=tmp_path / "cache", device="cpu",
                batch_size=16, progress=False, **more)


def test_the_card_of_a_labelled_sample_set_and_its_cached_inputs(data, tmp_path, capsys):
    samples = np.concatenate([pictures(6, 7 + c, tint) for c, tint in enumerate(TINTS)])
    labels = np.repeat(np.arange(3), 6)
    network = tiny_network()
    result = evaluate_samples(samples, "folder", CARD, features_dir=tmp_path / "set", labels=labels, card=True,
                              **kwargs(data, tmp_path, ) | {"networks": {"effnet": network}})
    values = result["metrics"]
    assert {"kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"} <= set(values)
    assert 1.0 <= values["vendi_effnet"] <= 18 and 0.0 <= values["copy_effnet"] <= 1.0
    # the splits: train for the copy rate, train + test as the labelled reals of ref_split all (the same files)
    cache = tmp_path / "cache"
    assert result["train"] == {"effnet": result["classes"]["effnet"][0]}
    assert result["held_out"] == {"effnet": result["classes"]["effnet"][1]}
    train = load_split_features(cache / result["train"]["effnet"])
    assert len(train) == 36 and sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert train.rows.tolist() == list(range(36))
    assert train.protocol["split"] == "train" and load_split_features(cache / result["held_out"]["effnet"]).protocol[
        "split"] == "test"
    protocol = result["protocol"]
    assert protocol["copy_effnet"]["quantile"] == 0.05 and protocol["copy_effnet"]["n_train"] == 36
    assert protocol["copy_effnet"]["held_out"]["split"] == "test"
    assert protocol["class_kid_effnet"]["classes_scored"] == 3
    assert protocol["class_kid_effnet"]["worst"][0]["name"] in ("class0", "class1", "class2")
    out = capsys.readouterr().out
    assert "train features of folder/train in tiny features: 36 images" in out  # progress lines, never silent
    assert "done in" in out
    # the reference (all = train + test) is assembled from the splits' features: no second pass over the images
    assert "reference statistics of folder/all in tiny features: from the cached features of its splits" in out
    assert network.module.seen == 18 + 36 + 30
    from benchmark.data import get_dataset
    from benchmark.metrics import reference_stats
    direct = reference_stats(get_dataset("folder", "all", root=data), tiny_network(), cache_dir=tmp_path / "direct",
                             device="cpu", batch_size=16, progress=False)
    derived = result["card"].inputs["effnet"].reference
    np.testing.assert_allclose(derived.prdc_features, direct.prdc_features, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(derived.sigma, direct.sigma, rtol=1e-5, atol=1e-9)
    assert derived.protocol == direct.protocol

    # labels are cached with the features; the leaderboard's card from the files equals the recorded values
    features_file = tmp_path / "set" / result["features"]["effnet"]
    assert load_sample_labels(features_file).tolist() == labels.tolist()
    card = CardFiles(cache).card(result, tmp_path / "set", CARD)
    assert card() == pytest.approx(values, rel=1e-9)
    again = evaluate_samples(samples, "folder", CARD, features_dir=tmp_path / "set", labels=labels,
                             **kwargs(data, tmp_path))
    assert again["metrics"] == pytest.approx(values) and "features of" not in capsys.readouterr().out  # all cached


def test_copies_of_the_fine_tuning_images_score_copy_rate_one(data, tmp_path):
    train = np.stack([np.asarray(Image.open(p)) for c in range(3)
                            for p in sorted((data / "train" / f"class{c}").glob("*.png"))[:4]])
    result = evaluate_samples(train, "folder", ["copy_effnet", "kid_effnet"], **kwargs(data, tmp_path))
    assert result["metrics"]["copy_effnet"] == 1.0
    fresh = np.concatenate([pictures(4, 50 + c, tint) for c, tint in enumerate(TINTS)])
    assert evaluate_samples(fresh, "folder", ["copy_effnet"], **kwargs(data, tmp_path))["metrics"]["copy_effnet"] < 0.5
    # fine-tuned on every image: no held-out images, one line saying so and what to do
    from benchmark.errors import UserError
    with pytest.raises(UserError, match="finetune.split: train"):
        evaluate_samples(fresh, "folder", ["copy_effnet"], train_split="all", **kwargs(data, tmp_path))


def test_the_real_control_carries_its_labels(data, tmp_path):
    from benchmark.metrics.evaluate import real_control_images
    images, _ = real_control_images("folder", 9, seed=0, ref_split="all", data_root=data)
    result = evaluate_samples(images, "folder", ["class_kid_effnet", "kid_effnet"], **kwargs(data, tmp_path))
    assert result["protocol"]["class_kid_effnet"]["classes_scored"] >= 1
    assert abs(result["metrics"]["kid_effnet"]) < 1.0  # real images of the reference itself: near 0


def test_merged_results_keep_every_spaces_files(data, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, image in enumerate(pictures(8, 3, TINTS[0])):
        Image.fromarray(image).save(samples / f"{i}.png")
    out = tmp_path / "m.json"
    evaluate_samples(samples, "folder", ["fd_effnet"], out=out, **kwargs(data, tmp_path))
    evaluate_samples(samples, "folder", ["vendi_effnet"], out=out, **kwargs(data, tmp_path))
    written = json.loads(out.read_text())
    assert set(written["metrics"]) == {"fd_effnet", "vendi_effnet"} and "effnet" in written["reference"]
