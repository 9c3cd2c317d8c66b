"""The guidance design space: step-aware rules, schedules, combination rules (APG, CFG-Zero*, FDG) against their
papers' formulas on hand-computed tensors, ICG's random classes, the factorised design, forward counts (nfe) and the
checks of every rule output."""
import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch

import guidance_plugin
from benchmark.cli import main
from benchmark.errors import ConfigError, UserError
from benchmark.guidance import (BUILTIN_METHODS, AXES, GuidanceRuleError, GuidedDenoiser, SamplingSteps, design_cell,
                                design_cells, low_band, nfe, project_update, resolve_method)
from benchmark.models import IdentityAutoencoder, reheaded
from benchmark.sampling import (SampleFolder, SamplingSettings, build_sampler, generate_samples, random_classes,
                                sample_set_nfe, sampler_identity, sampling_timesteps)

pytestmark = pytest.mark.usefixtures("one_thread")


def constant_models(eps_cond, eps_guide, calls=None):
    """A fine-tuned model predicting ``eps_cond`` and a pre-trained (and weak) one predicting ``eps_guide`` whatever
    the input; the fine-tuned one predicts ``eps_guide`` for labels >= 100 (its null and random calls)."""
    calls = [] if calls is None else calls

    def ft(x, t, y):
        calls.append(("ft", y.tolist()))
        pick = (y >= 100).view(-1, *([1] * (eps_cond.dim() - 1)))
        return torch.where(pick, eps_guide.expand(len(y), *eps_guide.shape[1:]),
                           eps_cond.expand(len(y), *eps_cond.shape[1:]))

    def pre(x, t, y):
        calls.append(("pre", y.tolist()))
        return eps_guide.expand(len(y), *eps_guide.shape[1:])
    return {"finetuned": ft, "pretrained": pre, "weak": pre}, calls


def denoise(spec, eps_cond, eps_guide, x, t=300, alpha_bar=0.64, timesteps=None, calls=None):
    models, calls = constant_models(eps_cond, eps_guide, calls)
    den = GuidedDenoiser(spec, models, null_labels={"finetuned": 100, "pretrained": 100}, guided_channels=None,
                         alphas_cumprod=torch.full((1000,), alpha_bar, dtype=torch.float64), timesteps=timesteps)
    y = torch.zeros(len(x), dtype=torch.long)
    return den(x, torch.full((len(x),), t), y, torch.full_like(y, 101)), calls


def tensor(*values):
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


# ---- combination rules against their papers' formulas


@pytest.mark.parametrize("negative", ["cfg", "dog", "autoguidance", "icg"])
def test_cfg_zero_star_is_the_papers_formula(negative):
    """v = (1 - w) s* v_u + w v_c with s* = <v_c, v_u> / ||v_u||^2, on eps; by hand: eps_c = (1, 2), eps_u = (2, 0):
    s* = 2 / 4 = 1/2 and at w = 3: -2 * 1/2 * (2, 0) + 3 * (1, 2) = (1, 6). Past the zero-init steps."""
    spec = resolve_method(negative, w=3.0, rule="cfg-zero-star", zero_steps=0)
    out, _ = denoise(spec, tensor(1, 2), tensor(2, 0), tensor(0, 0))
    assert torch.equal(out.flatten(), torch.tensor([1.0, 6.0]))
    with_zero_init = resolve_method(negative, w=3.0, rule="cfg-zero-star", zero_steps=1)
    late, _ = denoise(with_zero_init, tensor(1, 2), tensor(2, 0), tensor(0, 0), t=300)  # step 699 of 1000
    assert torch.equal(late, out)


def test_cfg_zero_star_zero_init_predicts_zero_velocity_and_runs_no_guide():
    """The first zero_steps steps: eps = x_t / (sqrt(alpha_bar) + sqrt(1 - alpha_bar)); alpha_bar = 0.64 -> x / 1.4.
    Sampling timesteps 900, 600, 300, 0: zero_steps = 2 zero-inits t = 900 and 600, not 300."""
    spec = resolve_method("dog", w=3.0, rule="cfg-zero-star", zero_steps=2)
    x, visited = tensor(1.4, -2.8), [0, 300, 600, 900]
    for t, want in ((900, [1.0, -2.0]), (600, [1.0, -2.0]), (300, [1.0, 6.0])):
        out, calls = denoise(spec, tensor(1, 2), tensor(2, 0), x, t=t, timesteps=visited)
        torch.testing.assert_close(out.flatten(), torch.tensor(want))
        assert [c[0] for c in calls] == (["ft"] if t > 300 else ["ft", "pre"])  # no guide forward at zero-init


def test_fdg_guides_the_low_and_high_bands_with_their_own_scales():
    """delta = eps_c = [[1, 2], [3, 4]] (guide 0): low band L = its mean 2.5, high H = delta - L. At w = 2 and
    high_ratio 3: eps_c + (w - 1) L + (w - 1) * 3 * H = [[-1, 3], [7, 11]]."""
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    spec = resolve_method("dog", w=2.0, rule="fdg", high_ratio=3.0)
    out, _ = denoise(spec, c, torch.zeros_like(c), torch.zeros_like(c))
    assert torch.equal(out, torch.tensor([[-1.0, 3.0], [7.0, 11.0]]).view(1, 1, 2, 2))
    # high_ratio 1 is the plain rule (dropped from the spec: the same images, the same identity)
    assert resolve_method("dog", w=2.0, rule="fdg", high_ratio=1.0) == resolve_method("dog", w=2.0)
    # the bands: 2x2 block means, a trailing odd column its own block; no spatial axes: all low band
    row = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]).view(1, 1, 1, 5)
    assert torch.equal(low_band(row), torch.tensor([2.0, 2.0, 6.0, 6.0, 9.0]).view(1, 1, 1, 5))
    points = torch.randn(4, 2)
    assert torch.equal(low_band(points), points)


@pytest.mark.parametrize("negative", ["cfg", "autoguidance", "icg"])
def test_apg_wraps_any_negative(negative):
    x, c, g = tensor(1, 0, 2), tensor(0, 1, 1), tensor(0.5, 1, -1)
    spec = resolve_method(negative, w=3.0, rule="apg", norm_threshold=0.3)
    assert spec.projected and spec.params["eta"] == 0.0  # rule=apg: the paper's eta = 0 by default
    out, _ = denoise(spec, c, g, x)
    update = project_update(c - g, c, x, torch.tensor([0.64]), 0.0, 0.3)
    torch.testing.assert_close(out, c + 2.0 * update)
    assert resolve_method(negative, w=3.0, eta=0.0).identity() == resolve_method(negative, w=3.0, rule="apg",
                                                                                  eta=0.0).identity()


def test_rules_compose_in_the_order_named():
    c, g, x = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out, _ = denoise(resolve_method("dog", w=2.0, rule="fdg+cfg-zero-star", zero_steps=0), c, g, x)
    d = c - g
    fdg = low_band(d) + 2.0 * (d - low_band(d))
    guide = c - fdg
    scale = (c * guide).sum((1, 2, 3), keepdim=True) / (guide * guide).sum((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, c + (c - scale * guide))


DESIGN = design_cells(list(AXES["negative"]), list(AXES["rule"]), list(AXES["schedule"]))


@pytest.mark.parametrize("cell", DESIGN, ids=[c.label for c in DESIGN])
def test_the_unguided_value_of_every_cell_is_the_conditional_exactly_with_no_guide_forward(cell):
    spec = cell.spec(w=1.0)
    assert not spec.guided and spec.identity() == {"method": "none", "w": 1.0} and spec.models() == ("finetuned",)
    c = torch.randn(2, 3, 4, 4)
    out, calls = denoise(spec, c, torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    assert torch.equal(out, c) and [name for name, _ in calls] == ["ft"]
    assert nfe(spec, range(0, 1000, 100)) == 10


# ---- schedules


def test_ramps_weight_the_update_by_progress_and_skip_weightless_steps():
    c, g = tensor(1.0), tensor(0.0)  # linear rule: eps_c + weight * (w - 1) * 1
    visited = [0, 250, 500, 750]  # progress 0, 1/4, 1/2, 3/4 at t = 750, 500, 250, 0
    up = resolve_method("dog", w=3.0, schedule="ramp-up", ramp_up_start=0.0)
    down = resolve_method("dog", w=3.0, schedule="ramp-down", ramp_down_end=0.5)
    for t, progress in ((750, 0.0), (500, 0.25), (250, 0.5), (0, 0.75)):
        out, calls = denoise(up, c, g, tensor(0.0), t=t, timesteps=visited)
        assert float(out) == pytest.approx(1.0 + 2.0 * progress)
        assert len(calls) == (1 if progress == 0 else 2)  # weight 0: the guide does not run
        out, _ = denoise(down, c, g, tensor(0.0), t=t, timesteps=visited)
        assert float(out) == pytest.approx(1.0 + 2.0 * (1 - 0.5 * progress))
    assert resolve_method("dog", w=2.0, schedule="ramp-up", ramp_up_start=1.0) == resolve_method("dog", w=2.0)
    assert nfe(up, visited) == 4 + 3 and nfe(down, visited) == 8


def test_interval_schedule_is_the_interval_parameter():
    by_key = resolve_method("dog", w=2.0, interval="100,800")
    by_schedule = resolve_method("dog", w=2.0, schedule="interval", t_low="100", t_high=800)  # text, as typed
    assert by_key == by_schedule and by_key.interval.low == 100.0 and by_key.describe() == "dog w=2 interval=100,800"
    assert by_key.shown_params() == {"w": 2.0, "t_low": 100.0, "t_high": 800.0}  # grid points differ in the tables
    s = SamplingSettings(steps=10)
    assert sampler_identity(s, by_schedule, 0, finetuned_sha256="f", pretrained_sha256="p",
                            autoencoder="identity")["guidance_interval"] == [100.0, 800.0]


def test_steps_table_counts_progress_from_the_first_step():
    steps = SamplingSteps(sampling_timesteps(5))
    assert steps.timesteps == (999, 749, 500, 250, 0)
    assert [steps.step(t).index for t in steps.timesteps] == [0, 1, 2, 3, 4]
    assert [steps.step(t).progress for t in steps.timesteps] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert steps.index_of(600) == 2 and steps.index(torch.tensor([999, 0, 600])).tolist() == [0, 4, 2]


# ---- step-aware rules, in full sampling


def tiny_sampler(tiny_dit, spec, steps=5, seed=3, **settings):
    ft = reheaded(tiny_dit, 3, seed=1)
    with torch.no_grad():
        torch.manual_seed(0)
        ft.y_embedder.embedding_table.weight.normal_(0, 0.5)
    s = SamplingSettings(steps=steps, **settings)
    return build_sampler(s, spec, seed, ft, tiny_dit, IdentityAutoencoder(), "cpu", {"weak": reheaded(tiny_dit, 3)})


def test_a_step_aware_rule_reproduces_dog_when_it_always_guides_and_fine_tune_only_when_it_never_does(tiny_dit):
    run = lambda method, **p: tiny_sampler(tiny_dit, resolve_method(method, p)).sample_latents(range(4))[0]  # noqa
    dog, unguided = run("dog", w=2.0), run("none")
    assert torch.equal(run("guidance_plugin:dog_always", w=2.0), dog)
    assert torch.equal(run("guidance_plugin:dog_never", w=2.0), unguided)
    early = run("guidance_plugin:dog_early", w=2.0)
    assert not torch.equal(early, dog) and not torch.equal(early, unguided)


def test_a_step_aware_rule_sees_the_models_timestep_and_the_progress(tiny_dit):
    seen = []

    def rule(eps, deltas, params, at):
        seen.append((at.t, at.progress, at.index, at.steps))
        return eps + deltas["g"]

    method = guidance_plugin.Method("seer", rule, (guidance_plugin.Guide("g", "pretrained", "null", None),))
    tiny_sampler(tiny_dit, resolve_method(method)).sample_latents(range(2))
    assert seen == [(999, 0.0, 0, 5), (749, 0.2, 1, 5), (500, 0.4, 2, 5), (250, 0.6, 3, 5), (0, 0.8, 4, 5)]
    # called directly with several timesteps in one batch, it sees one timestep per call
    seen.clear()
    den = GuidedDenoiser(resolve_method(method), {"finetuned": lambda x, t, y: x, "pretrained": lambda x, t, y: -x},
                         null_labels={"pretrained": 0}, timesteps=[0, 500])
    out = den(torch.ones(3, 2), torch.tensor([500, 0, 500]), torch.zeros(3, dtype=torch.long))
    assert sorted(seen) == [(0, 0.5, 1, 2), (500, 0.0, 0, 2)] and torch.equal(out, torch.full((3, 2), 3.0))


# ---- ICG's random classes


def test_random_classes_are_per_sample_other_than_its_own_and_batch_independent():
    labels = [i % 5 for i in range(200)]
    drawn = random_classes(7, range(200), labels, 5)
    assert all(d != y for d, y in zip(drawn.tolist(), labels)) and set(drawn.tolist()) == set(range(5))
    assert torch.equal(random_classes(7, range(50, 60), labels[50:60], 5), drawn[50:60])
    assert not torch.equal(random_classes(8, range(200), labels, 5), drawn)
    with pytest.raises(UserError, match="needs at least 2 classes"):
        random_classes(0, [0], [0], 1)


# ---- nfe: what the denoiser counts is what nfe predicts


NFE = {  # spec -> forwards per image at 5 steps (sampling timesteps 999, 749, 500, 250, 0)
    ("none", ()): 5, ("dog", (("w", 2.0),)): 10, ("cfg", (("w", 2.0),)): 10, ("icg", (("w", 2.0),)): 10,
    ("cfg+dog", (("w_cfg", 2.0), ("w_dog", 2.0))): 15, ("cfg+dog", (("w_cfg", 1.0), ("w_dog", 2.0))): 10,
    ("autoguidance", (("w", 2.0),)): 10, ("dog", (("w", 1.0),)): 5,
    ("dog", (("w", 2.0), ("interval", "0,600"))): 8,
    ("dog", (("w", 2.0), ("schedule", "ramp-up"))): 9,
    ("cfg", (("w", 2.0), ("rule", "cfg-zero-star"), ("zero_steps", 2))): 8,
    ("dog", (("w", 2.0), ("rule", "apg"), ("schedule", "ramp-down"), ("ramp_down_end", 0.0))): 10,
}


@pytest.mark.parametrize("method, params", list(NFE), ids=[f"{m}{dict(p)}" for m, p in NFE])
def test_counted_forwards_equal_the_predicted_nfe(tiny_dit, method, params):
    spec = resolve_method(method, dict(params))
    sampler = tiny_sampler(tiny_dit, spec)
    sampler.sample_latents(range(3))
    assert sampler.last_nfe == sampler.nfe == sample_set_nfe(spec, 5) == NFE[(method, params)]


# ---- the factorised design


def test_design_cells_are_method_entries_with_readable_labels():
    cells = design_cells(["cfg", "dog"], ["linear", "cfg-zero*"], "interval")
    assert [c.label for c in cells] == ["cfg+linear@interval", "cfg+cfg-zero-star@interval",
                                       "dog+linear@interval", "dog+cfg-zero-star@interval"]
    cell = cells[3]
    assert cell.axes() == {"negative": "dog", "rule": "cfg-zero-star", "schedule": "interval"}
    assert cell.entry() == {"name": "dog", "label": "dog+cfg-zero-star@interval",
                            "params": {"rule": "cfg-zero-star", "schedule": "interval"}}
    spec = cell.spec(w=2.0, t_high=600)
    assert spec == resolve_method(**{"method": "dog", "params": {**cell.entry()["params"], "w": 2.0, "t_high": 600}})
    assert spec.describe() == "dog w=2 rule=cfg-zero-star zero_steps=1 interval=0,600"
    assert cells[2].spec(w=2.0, t_low=0, t_high=700) == resolve_method("dog", w=2.0, interval="0,700")  # shared sets
    assert len(DESIGN) == 4 * 4 * 4 and {c.negative for c in DESIGN} <= set(BUILTIN_METHODS)


def one_line(error_type, fn, *args, **kwargs) -> str:
    with pytest.raises(error_type) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_every_misdeclared_axis_value_is_one_line_naming_the_method():
    assert "unknown negative 'dgo'; did you mean 'dog'" in one_line(ConfigError, design_cell, "dgo")
    assert "unknown rule 'apgg'; did you mean 'apg'" in one_line(ConfigError, design_cell, "dog", "apgg")
    assert "unknown schedule 'ramp'" in one_line(ConfigError, design_cell, "dog", "apg", "ramp")
    assert "negative 'none' has no guide" in one_line(ConfigError, design_cell, "none")
    assert "rule is empty" in one_line(ConfigError, design_cells, ["dog"], [])
    assert "names 'dog' twice" in one_line(ConfigError, design_cells, ["dog", "dog"])
    assert "method dog: unknown rule 'fgd'; did you mean 'fdg'" in one_line(ConfigError, resolve_method, "dog",
                                                                            rule="fgd")
    assert "method cfg: unknown schedule 'rampup'; did you mean 'ramp-up'" in one_line(
        ConfigError, resolve_method, "cfg", schedule="rampup")
    assert "parameter high_ratio belongs to rule fdg; add rule=fdg" in one_line(ConfigError, resolve_method, "dog",
                                                                                high_ratio=2)
    assert "parameter t_low belongs to schedule interval; add schedule=interval" in one_line(
        ConfigError, resolve_method, "dog", t_low=100)
    assert "give the interval once" in one_line(ConfigError, resolve_method, "dog", interval="0,500",
                                                schedule="ramp-up")
    assert "method dog: guidance interval [800.0, 100.0] is empty" in one_line(
        ConfigError, resolve_method, "dog", schedule="interval", t_low=800, t_high=100)
    assert "names a combination rule twice" in one_line(ConfigError, resolve_method, "dog", rule="apg+apg")
    assert "zero_steps=-1 is outside [0, 1000]" in one_line(ConfigError, resolve_method, "dog", rule="cfg-zero-star",
                                                            zero_steps=-1)


# ---- every rule output is checked


@pytest.mark.parametrize("method, words", [
    ("raising_method", "guidance method raising-rule (guidance_plugin:raising_method): rule raising_rule of module "
                       "guidance_plugin at sampling step 1 of 2 (t=999) raised KeyError: 'uncond'; fix the rule"),
    ("wrong_shape_method", "rule wrong_shape_rule of module guidance_plugin at sampling step 1 of 2 (t=999) returned "
                           "shape (2, 192); return a tensor shaped like eps_cond, (2, 3, 8, 8)"),
    ("nan_method", "guidance method nan-rule (guidance_plugin:nan_method): rule nan_rule of module guidance_plugin at "
                   "sampling step 1 of 2 (t=999) returned NaN/inf; make the rule return finite values"),
])
def test_a_failing_rule_is_one_line_naming_it_and_no_image_is_written(tiny_dit, tmp_path, method, words):
    sampler = tiny_sampler(tiny_dit, resolve_method(f"guidance_plugin:{method}", w=2.0), steps=2)
    folder = SampleFolder(tmp_path / "set", 4, {"case": method}).open()
    message = one_line(GuidanceRuleError, generate_samples, sampler, folder, 2, progress=False)
    assert words in message
    assert not list(folder.root.glob("shard_*/*.png")) and folder.missing() == [0, 1, 2, 3]


def test_non_finite_latents_never_reach_an_image(tiny_dit, tmp_path):
    nan_model = lambda x, t, y: torch.full((len(x), 6, 8, 8), float("nan"))  # noqa: E731
    sampler = dataclasses.replace(tiny_sampler(tiny_dit, resolve_method("none"), steps=2),
                                  denoiser=GuidedDenoiser(resolve_method("none"), {"finetuned": nan_model}))
    folder = SampleFolder(tmp_path / "set", 2, {"case": "nan"}).open()
    assert "non-finite latents for samples [0, 1]" in one_line(UserError, generate_samples, sampler, folder, 2,
                                                               progress=False)
    assert not list(folder.root.glob("shard_*/*.png"))


# ---- dogbench methods


def test_methods_command_lists_every_method_rule_and_schedule(capsys):
    assert main(["methods", "guidance_plugin:mixed_null"]) == 0
    out = capsys.readouterr().out
    for word in ("icg", "CFG-Zero*", "cfg-zero-star", "fdg", "apg", "dog", "autoguidance", "ramp-up", "t_low",
                 "guidance_plugin:mixed_null", "3 calls/step"):
        assert word in out, word
    assert "w               [0, 20] default 1.5 unguided 1" in out
    assert main(["methods", "guidance_plugin:mixed_nul"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dogbench methods: error:") and "did you mean" in err and len(err.splitlines()) == 1


def test_sample_sets_of_new_methods_have_their_own_identity():
    s = SamplingSettings(steps=6)
    ident = lambda spec: sampler_identity(s, spec, 0, finetuned_sha256="f", pretrained_sha256="p",  # noqa: E731
                                          autoencoder="identity", guide_sha256={"weak": "k"})
    fdg = ident(resolve_method("dog", w=2.0, rule="fdg", schedule="ramp-down"))
    assert (fdg["rule"], fdg["schedule"], fdg["params"]) == ("fdg", "ramp-down", {"high_ratio": 2.0,
                                                                                  "ramp_down_end": 0.0})
    icg = ident(resolve_method("icg", w=2.0))
    assert icg["method"] == "icg" and icg["pretrained_sha256"] is None
    assert len({str(ident(c.spec(w=2.0))) for c in DESIGN}) == len(DESIGN)  # every cell its own images


def test_fraction_free_reference_of_the_optimised_scale():
    """s* by exact arithmetic on random integers (the least-squares scale of the guide onto the conditional)."""
    rng = np.random.default_rng(0)
    c, g = rng.integers(-5, 6, 12), rng.integers(-5, 6, 12)
    exact = Fraction(int(c @ g), int(g @ g))
    spec = resolve_method("cfg", w=2.0, rule="cfg-zero-star", zero_steps=0)
    out, _ = denoise(spec, torch.tensor(c, dtype=torch.float32).view(1, 12, 1, 1),
                     torch.tensor(g, dtype=torch.float32).view(1, 12, 1, 1), torch.zeros(1, 12, 1, 1))
    want = [float(2 * Fraction(int(ci)) - exact * int(gi)) for ci, gi in zip(c, g)]
    torch.testing.assert_close(out.flatten(), torch.tensor(want), rtol=1e-6, atol=1e-6)
