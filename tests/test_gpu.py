"""Fast-path checks that need a CUDA device (skipped without one; run them on a GPU machine)."""
import pytest
import torch

from benchmark.devices import precision, tf32
from benchmark.diffusion import create_diffusion
from benchmark.models import build_dit
from benchmark.sampling import SamplingSettings
from benchmark.sampling.build import compiled, make_denoiser
from benchmark.sampling.point import method_spec

pytestmark = pytest.mark.gpu


def random_dit(num_classes):
    torch.manual_seed(num_classes)
    model = build_dit("DiT-S/2", input_size=32, num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.cuda().eval().requires_grad_(False)


@pytest.mark.parametrize("method", ["cfg", "dog"])
def test_bf16_compiled_eps_matches_fp32_per_step(method):
    """The fast path (bf16 autocast + torch.compile) agrees with fp32 per step to 1e-2 relative error."""
    ft, pre = random_dit(101), random_dit(1000)
    x = torch.randn(16, 4, 32, 32, device="cuda")
    y = torch.randint(0, 101, (16,), device="cuda")
    diffusion = create_diffusion("50")
    settings = SamplingSettings()
    spec = method_spec(method, values={"w": 1.5}, interval=settings.guidance_interval)
    ref = make_denoiser(spec, {"finetuned": ft, "pretrained": pre}, settings)
    fast = make_denoiser(spec, {"finetuned": compiled(random_dit(101)), "pretrained": compiled(random_dit(1000))},
                         settings)
    for i in (49, 25, 0):
        t = torch.full((16,), diffusion.timestep_map[i], device="cuda")
        with torch.no_grad():
            with tf32(False):
                a = ref(x, t, y)[:, :4]
            with precision("bf16", "cuda"):
                b = fast(x, t, y)[:, :4].float()
        assert ((a - b).norm() / a.norm()).item() <= 1e-2
