"""The feature networks: FID Inception-V3 layout and FID-specific blocks, the clean-resize preprocessing, DINOv2
through torch.hub from a local hub directory."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from benchmark.errors import UserError
from benchmark.io import file_sha256
from benchmark.metrics import inception
from benchmark.metrics.features import ResizePreprocess, clean_resize


# ---- FID Inception-V3 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_fid_layout():
    """The pytorch-fid weights file is torchvision's Inception3 state dict with a 1008-way fc and no aux classifier."""
    return torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)


def test_fid_inception_state_dict_layout_matches_weights_file(torchvision_fid_layout):
    ours = {k: tuple(v.shape) for k, v in inception.FIDInceptionV3().state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in torchvision_fid_layout.state_dict().items()}
    assert ours == expected
    assert ours["fc.weight"] == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in ours)


def test_fid_inception_random_init_gives_2048_features():
    torch.manual_seed(0)
    model = inception.FIDInceptionV3().eval()
    with torch.no_grad():
        feats = model(torch.rand(1, 3, 299, 299))
        logits = model.fc(feats)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # a mean of ReLU outputs


def _copy_weights(src, dst):
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst.eval()


def _randomised(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0, 0.3)
    return module.eval()


def test_fid_blocks_differ_from_torchvision_exactly_where_tensorflow_pools_differ():
    from torchvision.models import inception as tvi

    x = torch.randn(1, 192, 9, 9)
    border = torch.ones(9, 9, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    # A block: same branches and order as torchvision; the average pool ignores padding -> only the pool branch
    # (the last 32 channels) differs, and only on the border pixels
    ours = _randomised(inception.Block35(192, pool_features=32))
    tv = _copy_weights(ours, tvi.InceptionA(192, pool_features=32))
    with torch.no_grad():
        a, b = ours(x), tv(x)
    assert torch.equal(a[:, :-32], b[:, :-32])
    assert torch.allclose(a[:, -32:, ~border], b[:, -32:, ~border], atol=1e-6)
    assert not torch.allclose(a[:, -32:, border], b[:, -32:, border], atol=1e-3)
    # the reference blocks without pools match torchvision exactly
    red = _randomised(inception.Reduction35to17(192))
    with torch.no_grad():
        assert torch.equal(red(x), _copy_weights(red, tvi.InceptionB(192))(x))
    # E blocks: 7b differs from torchvision only at the border, 7c (max pool) also inside
    x8 = torch.randn(1, 64, 5, 5)
    for max_pool, interior_equal in ((False, True), (True, False)):
        e = _randomised(inception.Block8(64, max_pool_branch=max_pool))
        with torch.no_grad():
            a, b = e(x8), _copy_weights(e, tvi.InceptionE(64))(x8)
        assert torch.equal(a[:, :-192], b[:, :-192])
        assert torch.allclose(a[:, -192:, 1:-1, 1:-1], b[:, -192:, 1:-1, 1:-1], atol=1e-6) == interior_equal


def test_fid_inception_loads_a_state_dict_strictly(tmp_path, torchvision_fid_layout):
    tv = torchvision_fid_layout
    path = tmp_path / inception.WEIGHTS_FILENAME
    torch.save(tv.state_dict(), path)
    model = inception.load_fid_inception(path)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, tv.Mixed_7c.branch_pool.conv.weight)
    bad = dict(tv.state_dict())
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        inception.load_fid_inception(path)


def test_missing_inception_weights_name_the_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as e:
        inception.find_inception_weights()
    msg = str(e.value)
    assert inception.WEIGHTS_FILENAME in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg
    with pytest.raises(UserError, match="--inception-weights"):
        inception.find_inception_weights(tmp_path / "nope.pth")


# ---- preprocessing ------------------------------------------------------------------------------------------------


def test_clean_resize_is_float_bicubic_per_channel():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    x = clean_resize(img, 299)
    assert x.shape == (3, 299, 299) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # channel 1 equals a float-mode PIL bicubic of channel 1 alone (no uint8 rounding in between)
    ch = Image.fromarray(np.asarray(img)[:, :, 1].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
    np.testing.assert_allclose(x[1].numpy(), np.clip(np.asarray(ch), 0, 255) / 255, atol=1e-6)
    # and it is not the uint8 PIL path (which rounds)
    u8 = np.asarray(img.resize((299, 299), Image.BICUBIC), dtype=np.float32)[:, :, 1] / 255
    assert np.abs(u8 - x[1].numpy()).max() > 1e-4
    norm = ResizePreprocess(224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(img)
    assert norm.shape == (3, 224, 224) and torch.allclose(norm, clean_resize(img, 224) * 2 - 1, atol=1e-6)


# ---- DINOv2 through torch.hub -------------------------------------------------------------------------------------

HUBCONF = '''
import torch
import torch.nn as nn

dependencies = ["torch"]


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_dim = 6
        self.patch = nn.Conv2d(3, 6, kernel_size=14, stride=14)
        self.norm = nn.LayerNorm(6)

    def forward(self, x):
        return self.norm(self.patch(x).mean(dim=(2, 3)))


def dinov2_vitl14(*, pretrained=True, **kwargs):
    if pretrained:
        raise RuntimeError("the test hub has no downloadable weights: load with pretrained=False")
    return TinyViT()
'''


@pytest.fixture
def local_hub(tmp_path):
    repo = tmp_path / "dinov2_clone"
    repo.mkdir()
    (repo / "hubconf.py").write_text(HUBCONF)
    namespace = {}
    exec(HUBCONF, namespace)
    torch.manual_seed(3)
    reference = namespace["TinyViT"]().eval()
    with torch.no_grad():
        reference.norm.weight.uniform_(0.5, 1.5)
    weights = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(reference.state_dict(), weights)
    return repo, weights, reference


def test_dinov2_from_local_hub_dir_and_weights(local_hub):
    from benchmark.metrics.dinov2 import dinov2_network

    repo, weights, reference = local_hub
    net = dinov2_network(hub_dir=repo, weights=weights)
    assert net.name == "dinov2_vitl14" and net.dim == 6
    assert net.weights_sha256 == file_sha256(weights)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x = net.preprocess(img)
    assert x.shape == (3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.allclose(x, (clean_resize(img, 224) - mean) / std, atol=1e-6)
    with torch.no_grad():
        expected = reference(x[None])
    feats = net.forward(x[None])
    assert feats.dtype == torch.float32 and torch.allclose(feats, expected, atol=1e-6)


def test_dinov2_from_torch_hub_cache(local_hub, tmp_path, monkeypatch):
    from benchmark.metrics import dinov2

    repo, weights, reference = local_hub
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    repo.rename(hub / "facebookresearch_dinov2_main")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(UserError) as e:  # code cached, weights not yet
        dinov2.dinov2_network()
    assert dinov2.WEIGHTS_FILENAME in str(e.value) and str(hub / "checkpoints") in str(e.value)
    weights.rename(hub / "checkpoints" / dinov2.WEIGHTS_FILENAME)
    net = dinov2.dinov2_network()
    assert torch.equal(net.module.model.norm.weight, reference.norm.weight)
    assert net.weights_file == dinov2.WEIGHTS_FILENAME


def test_dinov2_hub_dir_without_hubconf_is_a_user_error(tmp_path):
    from benchmark.metrics.dinov2 import dinov2_network

    with pytest.raises(UserError, match="hubconf.py"):
        dinov2_network(hub_dir=tmp_path)
