import math

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.guidance import GuidanceInterval, GuidedDenoiser, check_guidance_scale, dog, guide
from benchmark.sampling.settings import SamplePoint


def test_formulas():
    cond, other = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    out = dog(cond, other[:, :4], 1.5)
    expected = cond[:, :3] + 0.5 * (cond[:, :3] - other[:, :3])
    assert torch.allclose(out[:, :3], expected)
    assert torch.equal(out[:, 3:], cond[:, 3:])  # 4th eps channel and the variance stay conditional
    all_ch = guide(cond, other[:, :4], 2.0, guided_channels=None)
    assert torch.allclose(all_ch[:, :4], 2 * cond[:, :4] - other[:, :4]) and torch.equal(all_ch[:, 4:], cond[:, 4:])


def test_w_equal_one_is_exactly_conditional_and_skips_guide():
    calls = []

    def model(x, t, y):
        calls.append("ft")
        return x * 2

    def pre(x, t, y):
        calls.append("pre")
        return x * 3

    x = torch.randn(3, 4, 2, 2)
    out = GuidedDenoiser(model, pre, 1.0, 1000)(x, torch.zeros(3), torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, x * 2) and calls == ["ft"]


def test_dog_uses_pretrained_null_label_and_cfg_batches():
    labels = {}

    def ft(x, t, y):
        labels.setdefault("ft", []).append(y.tolist())
        return torch.cat([x + y.view(-1, 1, 1, 1), x], dim=1)

    def pre(x, t, y):
        labels["pre"] = y.tolist()
        return torch.cat([x - 1, x], dim=1)

    x, t, y = torch.randn(2, 4, 2, 2), torch.tensor([5, 6]), torch.tensor([0, 2])
    out = GuidedDenoiser(ft, pre, 2.0, guide_null_label=1000)(x, t, y)
    assert labels["pre"] == [1000, 1000]
    assert torch.allclose(out[:, :3], 2 * (x + y.view(-1, 1, 1, 1))[:, :3] - (x - 1)[:, :3])
    labels.clear()
    GuidedDenoiser(ft, ft, 2.0, guide_null_label=7)(x, t, y)
    assert labels["ft"] == [[0, 2, 7, 7]]  # CFG: one batch-2B call


def test_guidance_interval_skips_guide_outside():
    calls = []

    def pre(x, t, y):
        calls.append(1)
        return torch.zeros_like(x)

    den = GuidedDenoiser(lambda x, t, y: torch.ones_like(x), pre, 3.0, 10, interval=GuidanceInterval(0, 500))
    x, y = torch.randn(2, 3, 2, 2), torch.zeros(2, dtype=torch.long)
    assert torch.equal(den(x, torch.tensor([900, 900]), y), torch.ones_like(x)) and not calls
    out = den(x, torch.tensor([100, 900]), y)
    assert torch.allclose(out[0], torch.full_like(x[0], 3.0)) and torch.equal(out[1], torch.ones_like(x[1]))
    assert GuidanceInterval.parse("0,700") == GuidanceInterval(0, 700)
    with pytest.raises(ValueError, match="LOW,HIGH"):
        GuidanceInterval.parse("5")


@pytest.mark.parametrize("bad", [-0.1, 20.5, math.nan, math.inf, "abc"])
def test_impossible_w_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"\[0.0, 20.0\]") as e:
        check_guidance_scale(bad)
    assert "\n" not in str(e.value)
    # where a run is configured (a command's --w, an experiment's grid), the same check, once
    with pytest.raises(ConfigError, match=r"w: guidance scale .* is outside \[0.0, 20.0\]|not a number"):
        SamplePoint.parse({"w": bad})
