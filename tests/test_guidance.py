"""Guidance methods: every built-in formula and APG against a hand computation, the unguided identities, forwards
skipped and batched as promised, a user's method from module:attribute, and bad input as one line."""
import hashlib
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.guidance import (BUILTIN_METHODS, Guide, GuidanceInterval, GuidedDenoiser, Method, Param,
                                check_guidance_scale, dog, guide, resolve_method, scale_param)
from benchmark.sampling.settings import SamplePoint

NULL_FT, NULL_PRE = 7, 1000


class Net:
    """A fake network ``(x, t, y) -> [eps, variance]``: eps depends on x, t and the label, so every guide differs;
    each call is recorded as (name, labels)."""

    def __init__(self, name, scale, calls, null_label=None):
        self.name, self.scale, self.calls, self.null_label = name, scale, calls, null_label

    def eps(self, x, t, y):
        return self.scale * x + 0.1 * y.view(-1, 1, 1, 1).float() + 1e-3 * t.view(-1, 1, 1, 1).float()

    def __call__(self, x, t, y):
        self.calls.append((self.name, y.tolist()))
        eps = self.eps(x, t, y)
        return torch.cat([eps, -eps], dim=1)  # + learned-variance channels


def nets(calls=None):
    calls = [] if calls is None else calls
    return {"finetuned": Net("ft", 2.0, calls, NULL_FT), "pretrained": Net("pre", 3.0, calls, NULL_PRE),
            "weak": Net("weak", 2.5, calls)}, calls


def test_formulas():
    cond, other = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    out = dog(cond, other[:, :4], 1.5)
    expected = cond[:, :3] + 0.5 * (cond[:, :3] - other[:, :3])
    assert torch.allclose(out[:, :3], expected)
    assert torch.equal(out[:, 3:], cond[:, 3:])  # 4th eps channel and the variance stay conditional
    all_ch = guide(cond, other[:, :4], 2.0, guided_channels=None)
    assert torch.allclose(all_ch[:, :4], 2 * cond[:, :4] - other[:, :4]) and torch.equal(all_ch[:, 4:], cond[:, 4:])


def test_every_builtin_formula_by_hand():
    models, _ = nets()
    x, t, y, y_random = torch.randn(2, 4, 2, 2), torch.tensor([10, 500]), torch.tensor([0, 2]), torch.tensor([3, 1])
    ft, pre, weak = models["finetuned"], models["pretrained"], models["weak"]
    c, u = ft.eps(x, t, y), ft.eps(x, t, torch.full_like(y, NULL_FT))
    s, k, r = pre.eps(x, t, torch.full_like(y, NULL_PRE)), weak.eps(x, t, y), ft.eps(x, t, y_random)
    expected = {
        ("none", ()): c,
        ("cfg", (("w", 2.5),)): c + 1.5 * (c - u),
        ("dog", (("w", 2.5),)): c + 1.5 * (c - s),
        ("cfg+dog", (("w_cfg", 2.0), ("w_dog", 3.0))): c + 1.0 * (c - u) + 2.0 * (c - s),
        ("autoguidance", (("w", 0.5),)): c - 0.5 * (c - k),
        ("icg", (("w", 2.5),)): c + 1.5 * (c - r),  # the fine-tune with a random other class
    }
    assert {name for name, _ in expected} == set(BUILTIN_METHODS)
    for (name, params), want in expected.items():
        out = GuidedDenoiser(resolve_method(name, dict(params)), models)(x, t, y, y_random)
        torch.testing.assert_close(out[:, :3], want[:, :3], msg=name)
        assert torch.equal(out[:, 3:], ft(x, t, y)[:, 3:]), name  # 4th eps channel and variance: conditional
    all_channels = GuidedDenoiser(resolve_method("dog", w=2.5), models, guided_channels=None)(x, t, y)
    torch.testing.assert_close(all_channels[:, :4], c + 1.5 * (c - s))


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_unguided_values_return_the_conditional_exactly_and_run_no_guide(name):
    models, calls = nets()
    method = resolve_method(name).method
    spec = resolve_method(name, {p.name: p.unguided for p in method.params if p.unguided is not None},
                          interval="0,999", eta=0.0, norm_threshold=1.0) if method.guides else resolve_method(name)
    assert not spec.guided and spec.identity() == {"method": "none", "w": 1.0} and spec.models() == ("finetuned",)
    x, t, y = torch.randn(3, 4, 2, 2), torch.tensor([0, 400, 999]), torch.tensor([0, 1, 2])
    out = GuidedDenoiser(spec, {"finetuned": models["finetuned"]})(x, t, y)  # no other model is even needed
    assert torch.equal(out, models["finetuned"](x, t, y)) and calls == [("ft", [0, 1, 2])] * 2


@pytest.mark.parametrize("name, params, expected_calls", [
    ("cfg", {"w": 2}, [("ft", [0, 2, NULL_FT, NULL_FT])]),  # CFG: one batch-2B call, as in the reference
    ("dog", {"w": 2}, [("ft", [0, 2]), ("pre", [NULL_PRE] * 2)]),
    ("cfg+dog", {"w_cfg": 2, "w_dog": 2}, [("ft", [0, 2, NULL_FT, NULL_FT]), ("pre", [NULL_PRE] * 2)]),
    ("cfg+dog", {"w_cfg": 1, "w_dog": 2}, [("ft", [0, 2]), ("pre", [NULL_PRE] * 2)]),
    ("cfg+dog", {"w_cfg": 2, "w_dog": 1}, [("ft", [0, 2, NULL_FT, NULL_FT])]),
    ("autoguidance", {"w": 2}, [("ft", [0, 2]), ("weak", [0, 2])]),  # the weak model gets the same class
    ("icg", {"w": 2}, [("ft", [0, 2, 4, 1])]),  # ICG: the random classes join the conditional call, batch 2B
])
def test_forwards_are_skipped_when_not_needed_and_batched_per_model(name, params, expected_calls):
    models, calls = nets()
    spec = resolve_method(name, params)
    den = GuidedDenoiser(spec, models)
    den(torch.randn(2, 4, 2, 2), torch.tensor([5, 6]), torch.tensor([0, 2]), torch.tensor([4, 1]))
    assert calls == expected_calls
    assert den.forwards == sum(len(y) for _, y in calls) // 2 == spec.calls_per_step()  # per image, 2B counts 2


def test_cfg_dog_with_one_scale_at_one_is_exactly_the_other_method():
    models, _ = nets()
    x, t, y = torch.randn(3, 4, 2, 2), torch.tensor([5, 500, 900]), torch.tensor([0, 1, 2])
    run = lambda name, **p: GuidedDenoiser(resolve_method(name, p), models)(x, t, y)  # noqa: E731
    assert torch.equal(run("cfg+dog", w_cfg=1.0, w_dog=2.5), run("dog", w=2.5))
    assert torch.equal(run("cfg+dog", w_cfg=2.5, w_dog=1.0), run("cfg", w=2.5))


def test_guidance_interval_skips_every_guide_outside():
    models, calls = nets()
    spec = resolve_method("cfg+dog", w_cfg=2.0, w_dog=3.0, interval="0,500")
    den = GuidedDenoiser(spec, models)
    x, y = torch.randn(2, 4, 2, 2), torch.tensor([0, 1])
    ft = models["finetuned"]
    assert torch.equal(den(x, torch.tensor([900, 900]), y), ft(x, torch.tensor([900, 900]), y))
    assert [c[0] for c in calls] == ["ft", "ft"]  # the denoiser's one conditional call, then the check's
    inside = den(x, torch.tensor([100, 900]), y)
    full = GuidedDenoiser(resolve_method("cfg+dog", w_cfg=2.0, w_dog=3.0), models)(x, torch.tensor([100, 900]), y)
    assert torch.equal(inside[0], full[0]) and torch.equal(inside[1], ft(x, torch.tensor([100, 900]), y)[1])
    assert GuidanceInterval.parse("0,700") == GuidanceInterval(0, 700)
    with pytest.raises(ValueError, match="LOW,HIGH"):
        GuidanceInterval.parse("5")


def apg_by_hand(x, eps_c, eps_g, alpha_bar, w, eta, r):
    """APG on one sample, in exact fractions: D_c = (x - s eps_c) / a, dD = D_c - D_g; cap |dD| at r; weight the part
    along D_c by eta; back to eps. (a, s) chosen rational: alpha_bar = 16/25 -> a = 4/5, s = 3/5."""
    a, s = Fraction(4, 5), Fraction(3, 5)
    assert Fraction(alpha_bar).limit_denominator() == a * a
    d_c = [(xi - s * e) / a for xi, e in zip(x, eps_c)]
    d_g = [(xi - s * e) / a for xi, e in zip(x, eps_g)]
    update = [p - q for p, q in zip(d_c, d_g)]
    norm = math.sqrt(sum(u * u for u in update))
    if r and norm > r:
        update = [u * Fraction(r) / Fraction(norm) for u in update]
    along = sum(u * d for u, d in zip(update, d_c)) / sum(d * d for d in d_c)
    update = [u - along * d + eta * along * d for u, d in zip(update, d_c)]
    guided_d = [d + (w - 1) * u for d, u in zip(d_c, update)]
    return [float((xi - a * d) / s) for xi, d in zip(x, guided_d)]  # eps of the guided D


@pytest.mark.parametrize("eta, r", [(0.0, 0.0), (0.5, 0.0), (1.0, 0.2), (0.0, 0.2), (1.0, 1.0)])
def test_apg_matches_the_hand_computation(eta, r):
    x, eps_c, eps_g = [Fraction(1), Fraction(0)], [Fraction(0), Fraction(1)], [Fraction(1, 2), Fraction(1)]
    shaped = lambda v: torch.tensor([float(c) for c in v]).view(1, 2, 1, 1)  # noqa: E731
    ft = lambda xx, t, y: shaped(eps_c).expand(len(y), -1, -1, -1)  # noqa: E731
    pre = lambda xx, t, y: shaped(eps_g).expand(len(y), -1, -1, -1)  # noqa: E731
    spec = resolve_method("dog", w=3.0, eta=eta, norm_threshold=r)
    den = GuidedDenoiser(spec, {"finetuned": ft, "pretrained": pre}, null_labels={"pretrained": 0},
                         guided_channels=None, alphas_cumprod=torch.full((1000,), 0.64, dtype=torch.float64))
    out = den(shaped(x), torch.tensor([300]), torch.tensor([0]))
    want = apg_by_hand(x, eps_c, eps_g, 0.64, 3, Fraction(eta), r)
    torch.testing.assert_close(out.flatten(), torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_apg_removes_the_parallel_part_and_caps_the_norm_per_sample():
    g = torch.Generator().manual_seed(0)
    ft_eps, pre_eps = torch.randn(4, 4, 3, 3, generator=g), torch.randn(4, 4, 3, 3, generator=g)
    x, t, y = torch.randn(4, 4, 3, 3, generator=g), torch.tensor([10, 300, 600, 990]), torch.zeros(4, dtype=torch.long)
    alphas = torch.linspace(0.9999, 0.0001, 1000, dtype=torch.float64)
    models = {"finetuned": lambda xx, tt, yy: ft_eps, "pretrained": lambda xx, tt, yy: pre_eps}
    den = lambda **p: GuidedDenoiser(resolve_method("dog", w=3.0, **p), models, null_labels={"pretrained": 0},  # noqa: E731
                                     alphas_cumprod=alphas)(x, t, y)
    a, s = alphas[t].sqrt().view(-1, 1, 1, 1).float(), (1 - alphas[t]).sqrt().view(-1, 1, 1, 1).float()
    d_c = (x[:, :3] - s * ft_eps[:, :3]) / a
    update_d = lambda out: -(s / a) * (out[:, :3] - ft_eps[:, :3]) / 2.0  # noqa: E731  (w - 1 = 2)
    along = (update_d(den(eta=0.0)) * d_c).flatten(1).sum(1) / d_c.flatten(1).norm(dim=1)
    assert along.abs().max() < 1e-4 * update_d(den(eta=0.0)).flatten(1).norm(dim=1).max()
    plain = update_d(den()).flatten(1).norm(dim=1)
    cap = float(plain.median())  # some samples above the cap, some below (those stay as they are)
    norms = update_d(den(norm_threshold=cap)).flatten(1).norm(dim=1)
    assert bool((plain < cap).any()) and bool((plain > cap).any())
    torch.testing.assert_close(norms, plain.clamp(max=cap), rtol=1e-4, atol=1e-5)
    assert torch.equal(den(eta=1.0, norm_threshold=0.0), den())  # APG off is the plain rule, bit for bit
    assert resolve_method("dog", w=2, eta=1.0).identity() == resolve_method("dog", w=2).identity()
    with pytest.raises(ValueError, match="noise schedule"):
        GuidedDenoiser(resolve_method("dog", w=3.0, eta=0.0), models, null_labels={"pretrained": 0})


def test_a_users_method_from_module_attribute():
    import guidance_plugin

    models, calls = nets()
    x, t, y = torch.randn(2, 4, 2, 2), torch.tensor([5, 6]), torch.tensor([0, 2])
    run = lambda method, **p: GuidedDenoiser(resolve_method(method, p), models)(x, t, y)  # noqa: E731
    for reference in ("guidance_plugin:mixed_null", "guidance_plugin:make_mixed_null"):  # the object or a factory
        spec = resolve_method(reference, w=2.0, mix=0.25)
        assert spec.method is guidance_plugin.mixed_null and spec.params == {"w": 2.0, "mix": 0.25}
        code = hashlib.sha256(Path(guidance_plugin.__file__).read_bytes()).hexdigest()  # an edited rule: new samples
        assert spec.identity() == {"method": "mixed-null", "w": 2.0, "params": {"mix": 0.25},
                                   "method_source": reference, "code_sha256": code}
        assert resolve_method(**spec.to_dict()).identity() == spec.identity()  # the spec round-trips
    torch.testing.assert_close(run("guidance_plugin:mixed_null", w=2.0, mix=0.0), run("cfg", w=2.0))
    torch.testing.assert_close(run("guidance_plugin:mixed_null", w=2.0, mix=1.0), run("dog", w=2.0))
    # APG (a wrapper selected by its parameters) and the interval apply to every guided method, a user's too
    assert resolve_method("guidance_plugin:mixed_null", eta=0.0, interval="0,500").projected


def one_line(error_type, fn, *args, **kwargs) -> str:
    with pytest.raises(error_type) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_methods_and_parameters_are_one_line_errors():
    assert "did you mean 'dog'" in one_line(ConfigError, resolve_method, "dgo")
    assert "did you mean 'w'" in one_line(ConfigError, resolve_method, "cfg", ww=2.0)
    assert "w=25 is outside [0, 20]" in one_line(ConfigError, resolve_method, "dog", w=25)
    assert "eta=2 is outside [0, 1]" in one_line(ConfigError, resolve_method, "dog", eta=2)
    assert "w='abc' is not a number" in one_line(ConfigError, resolve_method, "dog", w="abc")
    assert "method none has no parameter 'w'" in one_line(ConfigError, resolve_method, "none", w=2)
    assert "LOW,HIGH" in one_line(ConfigError, resolve_method, "cfg", interval="5")
    assert "does not import" in one_line(ConfigError, resolve_method, "no_such_module:rule")
    assert "has no attribute 'mixed_nul'; did you mean 'mixed_null'" in one_line(
        ConfigError, resolve_method, "guidance_plugin:mixed_nul")
    assert "is a int, not a benchmark.guidance.Method" in one_line(ConfigError, resolve_method,
                                                                   "guidance_plugin:not_a_method")
    assert "module:attribute" in one_line(ConfigError, resolve_method, "guidance_plugin:")
    # where a command is configured (SamplePoint: --method), the same check, once
    assert "did you mean 'cfg'" in one_line(ConfigError, SamplePoint.parse, {"method": "cgf"})
    # a method declared wrongly says what to fix
    rule = lambda eps, deltas, params: eps  # noqa: E731
    assert "not one of its parameters" in one_line(ValueError, Method, "m", rule, (Guide("g", "finetuned", "null", "s"),))
    assert "must be unique and not one of" in one_line(ValueError, Method, "m", rule, (), (Param("eta", 0, 1, 0.5),))
    assert "without spaces" in one_line(ValueError, Method, "my rule", rule)
    assert "registered method's name" in one_line(ConfigError, resolve_method, Method("cfg", rule))
    assert "label 'uncond'" in one_line(ValueError, Method, "m", rule, (Guide("g", "finetuned", "uncond", "w"),),
                                        (scale_param(),))


def test_a_denoiser_without_a_needed_model_says_which():
    models, _ = nets()
    message = one_line(ValueError, GuidedDenoiser, resolve_method("autoguidance", w=2), {"finetuned": models["finetuned"]})
    assert "needs the weak model" in message


@pytest.mark.parametrize("bad", [-0.1, 20.5, math.nan, math.inf, "abc"])
def test_impossible_w_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"\[0.0, 20.0\]") as e:
        check_guidance_scale(bad)
    assert "\n" not in str(e.value)
    # where a run is configured (a command's --w, an experiment's grid), the same check, once
    with pytest.raises(ConfigError, match=r"w: guidance scale .* is outside \[0.0, 20.0\]|not a number"):
        SamplePoint.parse({"w": bad})
