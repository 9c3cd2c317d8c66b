"""DiT's Gaussian diffusion (from ADM / improved DDPM): linear betas over 1000 steps, eps prediction, a learned
interpolation between the posterior variance and beta (``learned_range``), and the hybrid loss
``mse(eps) + L_vb`` where the variational-bound term sees the mean through a stop-gradient.

Method names follow the reference code (``q_sample``, ``p_mean_variance``, ``p_sample``, ``p_sample_loop``,
``training_losses``) so its users find what they know. Schedules are kept in float64 and gathered per sample
then cast to float32, as the reference does, so results agree to float32 rounding.

A model is any callable ``model(x, t, **model_kwargs) -> output`` with output channels C (fixed variance) or 2C
(eps, then the variance interpolation value v in [-1, 1]).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

VARIANCE_TYPES = ("learned_range", "fixed_small", "fixed_large")


def linear_beta_schedule(num_timesteps: int) -> np.ndarray:
    """Ho et al.'s linear schedule, rescaled so any step count spans the same noise range as 1000 steps."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def cosine_beta_schedule(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return np.array([min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)])


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.dim())))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log-probability of data in [-1, 1] quantised to 256 bins (the decoder term at t = 0), in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    def __init__(self, betas: np.ndarray, variance_type: str = "learned_range"):
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type {variance_type!r} not in {VARIANCE_TYPES}")
        self.variance_type = variance_type
        betas = np.asarray(betas, dtype=np.float64)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        acp = np.cumprod(alphas)
        acp_prev = np.append(1.0, acp[:-1])
        posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        # log of the posterior variance with its t=0 value (0) replaced by t=1's, so the log is finite
        arrays = dict(
            betas=betas,
            alphas_cumprod=acp,
            alphas_cumprod_prev=acp_prev,
            sqrt_alphas_cumprod=np.sqrt(acp),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - acp),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / acp),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / acp - 1),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
            posterior_mean_coef1=betas * np.sqrt(acp_prev) / (1.0 - acp),
            posterior_mean_coef2=(1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
            log_betas=np.log(betas),
            fixed_large_variance=np.append(posterior_variance[1], betas[1:]),
        )
        arrays["log_fixed_large_variance"] = np.log(arrays["fixed_large_variance"])
        self._np = arrays
        self._tables: dict[torch.device, dict[str, Tensor]] = {}

    def __getattr__(self, name):  # schedule arrays as numpy, e.g. diffusion.alphas_cumprod
        arrays = self.__dict__.get("_np", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def _extract(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Gather schedule ``name`` at timesteps ``t`` (float64 -> float32) and broadcast to ``like``'s shape.
        Tables are copied to each device once, so the sampling loop never synchronises with the host."""
        tables = self._tables.get(t.device)
        if tables is None:
            tables = self._tables[t.device] = {k: torch.from_numpy(v).to(t.device) for k, v in self._np.items()}
        out = tables[name][t].float()
        return out.view(-1, *([1] * (like.dim() - 1))).expand(like.shape)

    # Forward process
    def q_mean_variance(self, x_start: Tensor, t: Tensor):
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        var = self._extract("alphas_cumprod", t, x_start).neg().add(1.0)
        return mean, var, torch.log(var)

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        """x_t = sqrt(acp_t) x_0 + sqrt(1 - acp_t) eps."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor, t: Tensor):
        """q(x_{t-1} | x_t, x_0)."""
        mean = self._extract("posterior_mean_coef1", t, x_t) * x_start + self._extract("posterior_mean_coef2", t, x_t) * x_t
        return mean, self._extract("posterior_variance", t, x_t), self._extract("posterior_log_variance_clipped", t, x_t)

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps

    # Reverse process
    def _model_variance(self, model_output: Tensor, x: Tensor, t: Tensor):
        """Split the model output into eps and (variance, log variance) per the variance type."""
        C = x.shape[1]
        if self.variance_type == "learned_range":
            assert model_output.shape[1] == 2 * C, f"learned variance needs {2 * C} output channels, got {model_output.shape[1]}"
            eps, v = model_output[:, :C], model_output[:, C:]
            min_log = self._extract("posterior_log_variance_clipped", t, x)
            max_log = self._extract("log_betas", t, x)
            frac = (v + 1) / 2  # v in [-1, 1] interpolates log variance between the posterior's and beta
            log_variance = frac * max_log + (1 - frac) * min_log
            return eps, torch.exp(log_variance), log_variance
        eps = model_output[:, :C]
        if self.variance_type == "fixed_large":  # beta_t (with t=0's replaced by the posterior's): better NLL
            return eps, self._extract("fixed_large_variance", t, x), self._extract("log_fixed_large_variance", t, x)
        return eps, self._extract("posterior_variance", t, x), self._extract("posterior_log_variance_clipped", t, x)

    def p_mean_variance(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, clip_denoised: bool = True,
                        denoised_fn: Optional[Callable[[Tensor], Tensor]] = None, model_kwargs: Optional[dict] = None) -> dict:
        """p(x_{t-1} | x_t): the model's mean, variance, log variance and predicted x_0."""
        model_output = model(x, t, **(model_kwargs or {}))
        return self._p_mean_variance_from_output(model_output, x, t, clip_denoised, denoised_fn)

    def _p_mean_variance_from_output(self, model_output, x, t, clip_denoised=True, denoised_fn=None) -> dict:
        eps, variance, log_variance = self._model_variance(model_output, x, t)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart, "eps": eps}

    def p_sample(self, model, x: Tensor, t: Tensor, clip_denoised: bool = True, denoised_fn=None,
                 model_kwargs: Optional[dict] = None, noise: Optional[Tensor] = None) -> dict:
        """One ancestral step x_t -> x_{t-1} (no noise added at t = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = torch.randn_like(x) if noise is None else noise
        nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop_progressive(self, model, shape, noise: Optional[Tensor] = None, clip_denoised: bool = True,
                                  denoised_fn=None, model_kwargs: Optional[dict] = None, device=None, progress: bool = False,
                                  step_noise: Optional[Callable[[int], Tensor]] = None) -> Iterator[dict]:
        """Yield every step's output. ``step_noise(i)`` supplies the noise of step i (for per-sample seeding)."""
        device = device or (noise.device if noise is not None else "cpu")
        x = noise if noise is not None else torch.randn(*shape, device=device)
        steps = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="sampling", leave=False)
        for i in steps:
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            with torch.no_grad():
                out = self.p_sample(model, x, t, clip_denoised, denoised_fn, model_kwargs,
                                    noise=step_noise(i) if step_noise is not None else None)
            yield out
            x = out["sample"]

    def p_sample_loop(self, model, shape, noise: Optional[Tensor] = None, clip_denoised: bool = True, denoised_fn=None,
                      model_kwargs: Optional[dict] = None, device=None, progress: bool = False,
                      step_noise: Optional[Callable[[int], Tensor]] = None) -> Tensor:
        final = None
        for final in self.p_sample_loop_progressive(model, shape, noise, clip_denoised, denoised_fn, model_kwargs,
                                                    device, progress, step_noise):
            pass
        return final["sample"]

    # Training
    def _vb_terms_bpd(self, model_output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = False) -> Tensor:
        """One term of the variational bound, in bits per dimension: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
        t > 0 and the decoder NLL at t = 0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self._p_mean_variance_from_output(model_output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model, x_start: Tensor, t: Tensor, model_kwargs: Optional[dict] = None,
                        noise: Optional[Tensor] = None) -> dict:
        """Per-sample losses: ``mse`` on eps, ``vb`` (learned variance only; the mean is detached so L_vb trains
        only the variance) and their sum ``loss``."""
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        model_output = model(x_t, t, **(model_kwargs or {}))
        C = x_start.shape[1]
        terms = {}
        if self.variance_type == "learned_range":
            frozen = torch.cat([model_output[:, :C].detach(), model_output[:, C:]], dim=1)
            terms["vb"] = self._vb_terms_bpd(frozen, x_start, x_t, t)
        terms["mse"] = mean_flat((noise - model_output[:, :C]) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms
