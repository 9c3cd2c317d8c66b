"""Adaptive projected guidance (APG; Sadat, Hilliges & Weber, ICLR 2025) as a combination option of any guided method.

The paper writes guidance on the denoised prediction D (the model's estimate of x0):

    D = D_c + (w - 1) * dD,    dD = D_c - D_guide,

and changes the update dD before it is applied, in this order:

1. rescaling: ``dD <- dD * min(1, r / ||dD||)``, so no step moves D by more than the norm threshold r;
2. projection: ``dD = dD_par + dD_orth`` with ``dD_par`` the component along the conditional D_c; the update becomes
   ``dD_orth + eta * dD_par``. The parallel part mostly scales the image estimate (oversaturation at high w); eta = 0
   removes it, eta = 1 keeps it.

(Their third ingredient, reverse momentum, a running average of dD over the sampling steps, is not implemented: it
makes a step depend on the earlier ones, state a denoiser call does not carry.)

Here it is applied to each guide's update (``deltas[guide]``) before the method's rule combines them, so cfg, dog,
cfg+dog, autoguidance and a user's rule written on the deltas can all run with it. Norms and projections are per
sample, over the guided channels.

What it is applied to, and why. Our networks predict eps, but the projection is taken in the paper's space. With
``x_t = a * x0 + s * eps`` (a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)), ``D = (x_t - s * eps) / a`` is affine in
eps, so ``dD = -(s / a) * d_eps`` and the eps rule ``eps_c + (w - 1) * d_eps`` is exactly the D rule above. The update
is therefore the same vector up to a per-sample factor; what the space changes is (a) the direction it is projected
on: D_c, the image estimate whose saturation the parallel part raises, rather than eps_c, which at high noise is
nearly x_t / s and says little about the image, and (b) the units of the norm threshold: x0 units (image values,
latents for a latent model), the same at every step, rather than eps units that the factor s / a rescales from step
to step. So the conditional D_c is formed from x_t and alpha_bar_t, the update is transformed in x0 units, and the
result is mapped back to eps.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

ETA, NORM_THRESHOLD = "eta", "norm_threshold"
ETA_OFF, NORM_OFF = 1.0, 0.0  # the values at which APG is the plain rule (and is not computed at all)
TINY = 1e-12  # guards the divisions by a norm (an all-zero update or prediction)


def is_projected(params: Mapping[str, float]) -> bool:
    """Whether APG changes anything: a parallel weight other than 1, or a norm cap."""
    return params.get(ETA, ETA_OFF) != ETA_OFF or params.get(NORM_THRESHOLD, NORM_OFF) > NORM_OFF


def project_update(delta: Tensor, eps_cond: Tensor, x: Tensor, alpha_bar: Tensor, eta: float = ETA_OFF,
                   norm_threshold: float = NORM_OFF) -> Tensor:
    """APG's update in place of ``delta = eps_cond - eps_guide`` (all (B, n, ...) on the guided channels; ``x`` the
    noisy input x_t, ``alpha_bar`` (B,) its alpha_bar_t): rescaled to norm at most ``norm_threshold`` in x0 units
    (0: no cap), then its component along the conditional denoised prediction weighted by ``eta``. Computed in fp32,
    returned in ``delta``'s dtype."""
    dims = tuple(range(1, delta.dim()))
    shape = (-1,) + (1,) * (delta.dim() - 1)
    alpha_bar = alpha_bar.to(device=delta.device, dtype=torch.float64).view(shape)  # 1 - alpha_bar near t = 0
    a, s = alpha_bar.sqrt().float(), (1.0 - alpha_bar).sqrt().float()
    update = -(s / a) * delta.float()  # dD = D_c - D_guide, in x0 units
    if norm_threshold > NORM_OFF:
        norm = torch.linalg.vector_norm(update, dim=dims, keepdim=True)
        update = update * torch.clamp(norm_threshold / norm.clamp_min(TINY), max=1.0)
    if eta != ETA_OFF:
        denoised = (x.float() - s * eps_cond.float()) / a  # D_c
        unit = denoised / torch.linalg.vector_norm(denoised, dim=dims, keepdim=True).clamp_min(TINY)
        parallel = (update * unit).sum(dim=dims, keepdim=True) * unit
        update = (update - parallel) + eta * parallel
    return (-(a / s) * update).to(delta.dtype)
