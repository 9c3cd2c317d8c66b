"""dogbench: Domain Guidance (DoG) against classifier-free guidance (CFG) for transferring pre-trained diffusion models.

The package tree is a map of the pipeline:
data -> models -> diffusion -> guidance -> training -> sampling -> metrics -> harness.
"""
__version__ = "0.1.0"
