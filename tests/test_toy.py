"""The 2D toy: exact mixtures and metrics on known cases, the re-headed denoiser, and (at a tiny size) the mechanism
the paper claims: at w=2 DoG puts fewer samples off the target's support than CFG."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.toy.data import GaussianMixture, grid_means, source_mixture, target_mixture
from benchmark.toy.metrics import OOD_RADIUS, frechet_distance, out_of_domain_rate, toy_metrics
from benchmark.toy.model import ToyDenoiser, reheaded_for_target


def test_target_is_a_small_shifted_subdomain_of_the_source():
    source, target = source_mixture(), target_mixture()
    assert source.num_classes >= 25 and target.num_classes == 4
    nearest = torch.cdist(target.means, source.means).min(dim=1).values
    # near a source mode, yet a point on that source mode is outside the target's support
    assert bool((nearest < 0.5).all())
    assert bool((nearest / target.stds > OOD_RADIUS).all())


def test_mixture_log_prob_matches_scipy_and_moments_match_samples():
    from scipy.stats import multivariate_normal

    mix = GaussianMixture(torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
                          torch.tensor([0.5, 1.0], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64))
    x = torch.tensor([[0.1, -0.2], [1.5, 1.5], [5.0, -3.0]], dtype=torch.float64)
    expected = [math.log(0.3 * multivariate_normal.pdf(p, [0, 0], 0.25) + 0.7 * multivariate_normal.pdf(p, [2, 1], 1.0))
                for p in x.tolist()]
    assert torch.allclose(mix.log_prob(x), torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    samples, labels = mix.sample(200_000, torch.Generator().manual_seed(0))
    assert abs(float((labels == 1).double().mean()) - 0.7) < 0.01
    assert torch.allclose(samples.mean(0), mix.mean(), atol=0.02)
    assert torch.allclose(torch.cov(samples.T), mix.cov(), atol=0.03)


def test_bad_mixture_and_target_block_raise():
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.tensor([0.2, 0.2]))
    with pytest.raises(ValueError, match="2x2 block"):
        target_mixture(source_mixture(side=4), block=(3, 0))


def test_frechet_on_torch_statistics_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 2, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
    cov1, cov2 = a @ a.T + 0.1 * torch.eye(2, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, -1.0], dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1 + cov2)) - 2 * float(sqrtm((cov1 @ cov2).numpy()).real.trace())
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-12)


def test_metrics_on_known_cases():
    target = target_mixture()
    g = torch.Generator().manual_seed(0)
    x, y = target.sample(50_000, g)
    m = toy_metrics(x, target, y)
    # a 2D Gaussian puts exp(-r^2/2) of its mass beyond r stds: 1.1% at r=3
    assert m["ood_rate"] == pytest.approx(math.exp(-OOD_RADIUS**2 / 2), abs=0.003)
    assert m["off_class_rate"] == pytest.approx(m["ood_rate"], abs=0.003)
    assert m["fd"] < 1e-3
    # the mean NLL of exact samples is the mixture's entropy; modes are separated, so ~ entropy of one mode + log K
    entropy = 1 + math.log(2 * math.pi) + 2 * math.log(float(target.stds[0])) + math.log(target.num_classes)
    assert m["nll"] == pytest.approx(entropy, abs=0.03)
    # the source's samples are nearly all off the target support, far in NLL and FD
    xs, _ = source_mixture().sample(5000, g)
    ms = toy_metrics(xs, target)
    assert ms["ood_rate"] > 0.95 and ms["nll"] > m["nll"] + 50 and ms["fd"] > 1.0
    # points exactly on a source mode next to the target: all out of domain
    assert out_of_domain_rate(source_mixture().means, target) == 1.0
    # wrong labels make every sample off-class while leaving the class-free metrics alone
    mw = toy_metrics(x, target, (y + 1) % target.num_classes)
    assert mw["off_class_rate"] > 0.95 and mw["ood_rate"] == m["ood_rate"]


def test_grid_means_are_centred_and_spaced():
    means = grid_means(3, 0.5)
    assert means.shape == (9, 2)
    assert torch.allclose(means.mean(0), torch.zeros(2, dtype=torch.float64))
    assert means[1, 0] - means[0, 0] == pytest.approx(0.5)


def test_denoiser_shapes_and_reheading_keeps_the_body():
    pre = ToyDenoiser(num_classes=36, hidden=32, depth=2)
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    assert pre(x, t, torch.full((5,), pre.null_label)).shape == (5, 2)
    ft = reheaded_for_target(pre, 4)
    assert ft.num_classes == 4 and ft.null_label == 4 and ft.label_table.num_embeddings == 5
    assert pre.label_table.num_embeddings == 37  # the pre-trained model is left untouched
    for (name, a), (_, b) in zip(pre.named_parameters(), ft.named_parameters()):
        if not name.startswith("label_table"):
            assert torch.equal(a, b), name
    copied = reheaded_for_target(pre, 4, copy_null_row=True)
    assert torch.equal(copied.label_table.weight[4], pre.label_table.weight[36])
    with pytest.raises(IndexError):
        ft(x, t, torch.full((5,), 5))


def test_spread_ratio_is_one_for_exact_draws_and_shrinks_when_collapsed():
    from benchmark.toy.metrics import spread_ratio

    target = target_mixture()
    x, y = target.sample(50_000, torch.Generator().manual_seed(3))
    assert spread_ratio(x, y, target) == pytest.approx(1.0, abs=0.02)
    centre = target.means[y]
    assert spread_ratio(centre + 0.5 * (x - centre), y, target) == pytest.approx(0.5, abs=0.02)


def test_toy_denoisers_use_their_own_guides():
    from benchmark.guidance import resolve_method
    from benchmark.toy.experiment import make_diffusions, toy_denoiser
    from benchmark.toy.settings import ToyConfig

    torch.manual_seed(0)
    pre = ToyDenoiser(num_classes=36, hidden=32, depth=2)
    ft = reheaded_for_target(pre, 4)
    weak = reheaded_for_target(pre, 4)
    with torch.no_grad():  # make the fine-tuned model differ from the pre-trained one beyond its label table
        for p in ft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    models = {"finetuned": ft, "pretrained": pre, "weak": weak}
    _, diffusion = make_diffusions(ToyConfig())
    x, t, y = torch.randn(6, 2), torch.randint(0, 1000, (6,)), torch.tensor([0, 1, 2, 3, 0, 1])
    run = lambda name, **p: toy_denoiser(resolve_method(name, p), models, diffusion)(x, t, y)  # noqa: E731
    cond = ft(x, t, y)
    with torch.no_grad():
        torch.testing.assert_close(run("cfg", w=2.0), 2 * cond - ft(x, t, torch.full_like(y, 4)))
        torch.testing.assert_close(run("dog", w=2.0), 2 * cond - pre(x, t, torch.full_like(y, 36)))
        torch.testing.assert_close(run("autoguidance", w=2.0), 2 * cond - weak(x, t, y))
        torch.testing.assert_close(run("none"), cond)
        other = torch.tensor([1, 2, 3, 0, 2, 3])  # ICG: the fine-tune with each sample's random other class
        icg = toy_denoiser(resolve_method("icg", w=2.0), models, diffusion)(x, t, y, other)
        torch.testing.assert_close(icg, 2 * cond - ft(x, t, other))


def test_toy_runs_every_builtin_guided_method_the_apg_variants_and_the_rules():
    from benchmark.guidance import BUILTIN_METHODS
    from benchmark.toy.experiment import toy_runs
    from benchmark.toy.settings import ToyConfig

    runs = toy_runs(ToyConfig.parse({"w_grid": [1, 3], "plot_w": 3}))
    assert [r.label for r in runs] == ["none", "cfg", "dog", "cfg+dog", "autoguidance", "icg", "cfg+APG", "dog+APG",
                                       "cfg+cfg-zero-star", "dog+cfg-zero-star", "icg+cfg-zero-star", "cfg+fdg",
                                       "dog+fdg", "icg+fdg"]
    assert runs[-1].spec.name == "icg" and runs[-1].spec.rules == ("fdg",)
    assert {r.spec.name for r in runs} == set(BUILTIN_METHODS)
    by = {r.label: r.spec for r in runs}
    assert by["cfg+dog"].params["w_cfg"] == by["cfg+dog"].params["w_dog"] == 2.0  # half the extrapolation each
    assert by["dog+APG"].projected and by["dog+APG"].params["w"] == 3.0 and not by["dog"].projected


def test_t_interval_by_hand():
    from benchmark.toy.report import t_interval

    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * sd 1 / sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert t_interval([5.0]) == (5.0, None, None)


def test_config_rejects_bad_input_with_the_fix():
    from benchmark.toy.settings import ToyConfig

    def error(**values):
        with pytest.raises(ConfigError) as info:
            ToyConfig.parse(values)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert error(w_grid=[1.0, 2.0], plot_w=2.5).startswith("plot_w 2.5 is not in w_grid [1.0, 2.0]")
    assert "w_grid[1]: guidance scale w=-3.0 is outside [0.0, 20.0]" in error(w_grid=[1.0, -3.0])
    assert "field_t [1000] must be timesteps in [0, 999]" in error(field_t=[1000])
    assert "sampler_variance='learned' is not one of small, large" in error(sampler_variance="learned")
    assert "did you mean 'w_grid'" in error(w_gird=[1.0])
    assert "weak_step 1500 must be before the last" in error(weak_step=1500)
    assert "plot_w 1.0 is unguided" in error(w_grid=[1.0, 2.0], plot_w=1.0)
    assert "'none' has no guide to project" in error(apg_methods=["none"])
    assert "did you mean 'dog'" in error(apg_methods=["dgo"])


def test_toy_flags_come_from_the_schema(capsys):
    assert main(["toy", "--plot-w", "2.5", "--w-grid", "1,2"]) == 1
    assert "plot_w 2.5 is not in w_grid" in capsys.readouterr().err
    assert main(["toy", "--num-samples", "0"]) == 1
    assert "--num-samples=0 must be >= 1" in capsys.readouterr().err


# The smallest toy that still trains a usable pre-trained and fine-tuned pair (~10 s on 2 busy cores). 50 beta_t
# ("large") sampler steps leave the unguided model ~20% off the target support, so guidance has something to fix.
TINY_ARGS = ["toy", "--seed", "0", "--pretrain-steps", "1000", "--finetune-steps", "500", "--hidden", "64",
             "--num-samples", "250", "--seeds", "2", "--sample-steps", "50", "--sampler-variance", "large",
             "--w-grid", "1,2", "--plot-w", "2", "--field-t", "50", "--apg-methods", "dog", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from benchmark.cli import main
    from benchmark.io import read_json

    out = tmp_path_factory.mktemp("toy")
    assert main(TINY_ARGS + ["--out", str(out)]) == 0
    return out, read_json(out / "metrics.json")


def test_dog_puts_fewer_samples_off_the_target_support_than_cfg_at_w2(tiny_run):
    """The paper's mechanism: CFG extrapolates away from the fine-tuned model's own (target-only) unconditional, DoG
    away from the pre-trained model's (source) unconditional, which pulls samples onto the target more strongly."""
    _, metrics = tiny_run
    by = {(r["variant"], r["w"]): r for r in metrics["leaderboard"]}
    cfg, dog, unguided = by[("cfg", 2.0)], by[("dog", 2.0)], by[("none", 1.0)]
    assert dog["ood_rate_mean"] < cfg["ood_rate_mean"] < unguided["ood_rate_mean"]


def test_toy_writes_every_output(tiny_run):
    import csv

    out, metrics = tiny_run
    for name in ("leaderboard.csv", "leaderboard.md", "metrics.json", "metrics.csv", "samples.npz", "samples.png",
                 "guidance_field.png", "metrics_vs_w.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    board = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert list(board[0])[:2] == ["method", "params"] and "n_seeds" in board[0]
    for metric in ("ood_rate", "off_class_rate", "nll", "spread_ratio", "fd"):
        assert {f"{metric}_mean", f"{metric}_low", f"{metric}_high"} <= set(board[0])
    rows = {(r["method"], r["params"]): r for r in board}
    assert {("none", ""), ("cfg", "w=2"), ("dog", "w=2"), ("cfg+dog", "w_cfg=1.5 w_dog=1.5"), ("autoguidance", "w=2"),
            ("dog", "w=2 eta=0"), ("target_exact", "")} <= set(rows)
    dog = rows[("dog", "w=2")]
    low, mean, high = (float(dog[f"ood_rate_{s}"]) for s in ("low", "mean", "high"))
    assert dog["n_seeds"] == "2" and low <= mean <= high
    per_seed = list(csv.DictReader(open(out / "metrics.csv")))
    assert sorted({r["seed"] for r in per_seed if r["variant"] == "dog+APG"}) == ["0", "1"]
    assert "| dog | w=2 eta=0 |" in (out / "leaderboard.md").read_text()
    assert metrics["config"]["w_grid"] == [1.0, 2.0] and not list(out.glob("*.tmp"))
    # exact target draws score as in-domain as the metric allows
    exact = next(r for r in metrics["leaderboard"] if r["method"] == "target_exact")
    assert exact["ood_rate_mean"] < 0.04 and exact["fd_mean"] < 0.01


def test_a_lora_finetune_of_the_toy_trains_only_its_adapter_and_table_and_guides_with_the_adapter_off():
    from benchmark.toy.model import ToyLoRA

    torch.manual_seed(0)
    pre = ToyDenoiser(num_classes=36, hidden=32, depth=2)
    with torch.no_grad():
        for p in pre.parameters():
            p.normal_(0, 0.1)
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    null = torch.full((5,), 36)
    with torch.no_grad():
        before = pre(x, t, null)
    lora = ToyLoRA(pre, 4, rank=2)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or "modules_to_save" in n for n in trainable)
    # rank 2 x (in + out) for each block's modulation (32 -> 64) and two MLP layers (32 -> 32), and the 5-row table
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == 2 * 2 * (96 + 64 + 64) + 5 * 32
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if ".lora_B" in n:
                p.normal_(0, 0.5)  # a trained adapter
        guide = lora.adapter_off()
        assert torch.equal(guide(x, t, null), before)  # the pre-trained model: its own table and null row (36)
        assert (lora(x, t, torch.full((5,), 4)) - before).abs().max() > 1e-3
    assert (lora.null_label, guide.null_label) == (4, 36)


@pytest.mark.slow
def test_the_toy_runs_with_a_lora_finetune(tmp_path):
    from benchmark.io import read_json

    args = [a for a in TINY_ARGS if a != "--no-progress"]
    assert main(args + ["--lora-rank", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["config"]["lora_rank"] == 4
    dog = [r for r in metrics["rows"] if r["variant"] == "dog" and r["w"] == 2.0]
    assert len(dog) == 2 and all(math.isfinite(r["nll"]) for r in dog)
