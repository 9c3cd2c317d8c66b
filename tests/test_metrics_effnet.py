"""EfficientNet-Lite0 (fd_effnet): TF SAME padding, strict loading, real classification, and a feature space in which
two splits of one dataset are far closer than two different datasets."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from benchmark.io import file_sha256
from conftest import SHARED_DATA, run_if


def test_same_padding_is_tensorflow_style():
    from benchmark.metrics.effnet import SameConv2d

    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    # TF SAME, even input, stride 2, k=3: total pad 1 -> nothing before, one row/column after
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    x7 = torch.randn(1, 1, 7, 7)  # odd input: pad 1 on each side
    assert torch.equal(conv(x7), F.conv2d(x7, conv.weight, stride=2, padding=1))


def test_efficientnet_lite0_loads_strictly_and_classifies_a_real_photo():
    from benchmark.metrics.effnet import effnet_network, packaged_weights_path

    photo = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib sample photo not installed")
    img = Image.open(photo).convert("RGB")
    side = min(img.size)
    img = img.crop(((img.width - side) // 2, (img.height - side) // 2, (img.width + side) // 2, (img.height + side) // 2))
    net = effnet_network(224)  # load_efficientnet_lite0 inside: strict=True
    x = net.preprocess(img)[None]
    with torch.no_grad():
        logits = net.module.logits(x)
        feats = net.forward(x)
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    top5 = [categories[i] for i in logits[0].topk(5).indices]
    assert top5[0] == "military uniform", top5  # Grace Hopper in her US Navy uniform
    assert feats.shape == (1, 1280) and net.dim == 1280
    assert net.protocol()["weights_sha256"] == file_sha256(packaged_weights_path())



def test_input_size_follows_dataset_resolution():
    from benchmark.metrics.effnet import effnet_input_size

    assert effnet_input_size(32) == 128 and effnet_input_size(256) == 224 and effnet_input_size(None) == 224




def shared_images(name: str, split: str, n: int) -> list[Image.Image]:
    """n images (seeded choice) of a shared 32x32 set, through benchmark.data when it is there."""
    rng = np.random.default_rng(0)
    try:
        from benchmark.data import get_dataset
    except ImportError:
        get_dataset = None
    if get_dataset is not None:
        ds = get_dataset(name, split=split, root=SHARED_DATA)
        return [ds[int(i)][0] for i in rng.choice(len(ds), n, replace=False)]
    folder = {"caltech101-32": "caltech101", "cifar10-32": "cifar10"}[name]
    z = np.load(next((SHARED_DATA / folder).glob("*.npz")))
    rows = np.flatnonzero(z["is_train"] == (split == "train"))
    rows = rows[rng.choice(len(rows), n, replace=False)]
    if "images" in z:
        return [Image.fromarray(z["images"][i]) for i in rows]
    b, o = z["jpeg"], z["offsets"]
    return [Image.open(io.BytesIO(b[o[i]:o[i + 1]].tobytes())).convert("RGB") for i in rows]


@pytest.mark.slow
@run_if(shared_data="caltech101")
@run_if(shared_data="cifar10")
def test_fd_effnet_separates_datasets():
    from benchmark.metrics import extract_features, frechet_distance_from_features
    from benchmark.metrics.effnet import effnet_input_size, effnet_network

    net = effnet_network(effnet_input_size(32))
    n = 1500
    feats = {key: extract_features(net, shared_images(*key, n), batch_size=100, device="cpu", progress=False)
             for key in (("caltech101-32", "train"), ("caltech101-32", "test"), ("cifar10-32", "test"))}
    train, test, cifar = feats["caltech101-32", "train"], feats["caltech101-32", "test"], feats["cifar10-32", "test"]
    within = frechet_distance_from_features(train, test)
    across = frechet_distance_from_features(train, cifar)
    # In 1280 dimensions the FD carries a finite-sample bias that shrinks like 1/n and is about the same for both
    # pairs (measured within/across: 327/491 at n=500, 195/377 at n=1000, 133/314 at n=1500), so the ratio needs
    # n in the thousands to be large...
    assert within > 0 and across > 2 * within, (within, across)
    # ...while the mean term, whose bias is only tr(cov)/n per set (~1.4), separates the datasets by an order of
    # magnitude (measured 2.3 vs 39.8)
    mean_within = float(((train.mean(0) - test.mean(0)) ** 2).sum())
    mean_across = float(((train.mean(0) - cifar.mean(0)) ** 2).sum())
    assert mean_across > 8 * mean_within, (mean_within, mean_across)


@pytest.mark.gpu
def test_gpu_extraction_and_prdc_match_cpu():
    from benchmark.metrics import extract_features, prdc
    from benchmark.metrics.effnet import effnet_network

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    net = effnet_network(128)
    cpu = extract_features(net, images, batch_size=8, device="cpu", progress=False)
    gpu = extract_features(net, images, batch_size=8, device="cuda", num_workers=2, progress=False)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
    real, fake = rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) + 0.3
    assert prdc(real, fake, device="cuda") == pytest.approx(prdc(real, fake, device="cpu"), abs=1e-12)
