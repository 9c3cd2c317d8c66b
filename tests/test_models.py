import json

import pytest
import torch

from benchmark.models import CheckpointError, DiT, build_dit, export_checkpoint, load_dit, reheaded
from benchmark.models.checkpoint import extract_state_dict, infer_dit_config
from conftest import FIXTURES, run_if, tiny_dit_config

needs_fixtures = run_if(fixtures=True)


@needs_fixtures
def test_xl2_state_dict_layout_matches_release():
    layout = json.loads((FIXTURES / "dit_xl2_256_state_dict_layout.json").read_text())
    with torch.device("meta"):
        model = build_dit("DiT-XL/2", input_size=32, num_classes=1000)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(layout["state_dict"])  # same keys, same order
    assert ours == layout["state_dict"]
    assert sum(v.numel() for v in model.state_dict().values()) == layout["num_parameters"]


@needs_fixtures
def test_small_reference_forward_and_cfg_forward():
    ref = torch.load(FIXTURES / "dit_small_reference.pt", weights_only=False)
    model = DiT(**ref["config"]).eval()
    model.load_state_dict(ref["state_dict"], strict=True)
    with torch.no_grad():
        out = model(ref["x"], ref["t"], ref["y"])
        f = ref["forward_with_cfg"]
        cfg_out = model.forward_with_cfg(f["x"], f["t"], f["y"], f["scale"])
    assert ((out - ref["out"]).norm() / ref["out"].norm()) <= 1e-5
    assert ((cfg_out - f["out"]).norm() / f["out"].norm()) <= 1e-5


def test_infer_config_from_shapes(tiny_dit):
    cfg = infer_dit_config(tiny_dit.state_dict())
    for key in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_classes", "learn_sigma"):
        assert cfg[key] == tiny_dit.config[key]


def test_load_formats_prefers_ema(tmp_path, tiny_dit):
    sd = tiny_dit.state_dict()
    other = {k: v + 1 for k, v in sd.items()}
    torch.save({"model": other, "ema": sd, "config": tiny_dit.config}, tmp_path / "train.pt")
    loaded = load_dit(tmp_path / "train.pt")
    assert torch.equal(loaded.final_layer.linear.weight, tiny_dit.final_layer.linear.weight)
    torch.save({"model": other}, tmp_path / "model_only.pt")
    assert torch.equal(load_dit(tmp_path / "model_only.pt", num_heads=2).pos_embed, other["pos_embed"])
    torch.save(sd, tmp_path / "raw.pt")  # released checkpoints are raw state dicts: config from shapes
    assert load_dit(tmp_path / "raw.pt", num_heads=2).config["num_classes"] == 5
    with pytest.raises(CheckpointError, match="cannot infer the head count"):
        load_dit(tmp_path / "raw.pt")
    lightning = {"state_dict": {**{f"model.{k}": v + 1 for k, v in sd.items()}, **{f"ema.{k}": v for k, v in sd.items()}}}
    assert torch.equal(extract_state_dict(lightning)["pos_embed"], sd["pos_embed"])


def test_errors_are_one_line(tmp_path, tiny_dit):
    with pytest.raises(CheckpointError, match="not found"):
        load_dit(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_dit(tmp_path / "junk.pt")
    torch.save(tiny_dit.state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="5 classes but 7 were requested") as e:
        load_dit(tmp_path / "raw.pt", num_classes=7, num_heads=2)
    assert "\n" not in str(e.value)
    torch.save({"ema": tiny_dit.state_dict()}, tmp_path / "ema.pt")
    with pytest.raises(CheckpointError, match="does not fit DiT-S/2.*shape of") as e:
        load_dit(tmp_path / "ema.pt", model="DiT-S/2", num_classes=5, input_size=8, in_channels=3)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="not a DiT checkpoint"):
        torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
        load_dit(tmp_path / "other.pt")


def test_reheading_keeps_every_other_weight(tiny_dit):
    new = reheaded(tiny_dit, num_classes=3, seed=0)
    assert new.y_embedder.embedding_table.weight.shape == (4, tiny_dit.config["hidden_size"])  # K + 1 rows
    assert new.null_label == 3
    old_sd, new_sd = tiny_dit.state_dict(), new.state_dict()
    assert set(old_sd) == set(new_sd)
    for k in old_sd:
        if not k.startswith("y_embedder"):
            assert torch.equal(old_sd[k], new_sd[k]), k
    assert new.y_embedder.embedding_table.weight.std() < 0.05  # fresh N(0, 0.02) table, not the old one


def test_export_roundtrip(tmp_path, tiny_dit):
    export_checkpoint(tiny_dit, tmp_path / "ema.pt", autoencoder="identity", dataset="x")
    loaded = load_dit(tmp_path / "ema.pt")
    assert loaded.checkpoint_meta["autoencoder"] == "identity"
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 5])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), tiny_dit(x, t, y))


def test_bf16_autocast_forward(tiny_dit):
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 5])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_dit(x, t, y)
    ref = tiny_dit(x, t, y)
    assert out.shape == (2, 6, 8, 8) and torch.isfinite(out).all()
    assert ((out.float() - ref).norm() / ref.norm()) < 0.05


def test_fresh_model_is_adaln_zero():
    model = DiT(**tiny_dit_config())
    out = model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert torch.count_nonzero(out) == 0


def test_release_name_offline_is_one_line(tmp_path, monkeypatch):
    import time

    import benchmark.models.checkpoint as ckpt

    monkeypatch.setenv("DOGBENCH_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)

    def offline(url, timeout=5):
        raise ckpt.NetworkError("cannot reach the download host dl.fbaipublicfiles.com (offline?)")

    monkeypatch.setattr(ckpt, "probe", offline)
    start = time.time()
    with pytest.raises(CheckpointError, match="cannot be downloaded.*place it in one of") as e:
        load_dit("DiT-XL-2-256x256.pt")
    assert "\n" not in str(e.value) and time.time() - start < 5
    (tmp_path / "DiT-XL-2-256x256.pt").write_bytes(b"")  # found in $DOGBENCH_CHECKPOINTS -> read, and rejected
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_dit("DiT-XL-2-256x256.pt")


def test_flop_count_matches_the_dit_paper():
    """The DiT paper's Table 4 'Gflops' (S/2 6.06, B/2 23.01, L/2 80.71, XL/2 118.64) count multiply-adds; our
    count is in FLOPs (2 per multiply-add), the unit of the MFU that `dogbench perf` reports."""
    from benchmark.models import dit_config, dit_flops_per_forward

    for name, gmacs in [("DiT-S/2", 6.06), ("DiT-B/2", 23.01), ("DiT-L/2", 80.71), ("DiT-XL/2", 118.64)]:
        flops = dit_flops_per_forward({**dit_config(name, input_size=32, in_channels=4), "learn_sigma": True})
        assert abs(flops / 2e9 - gmacs) / gmacs < 0.002, name
