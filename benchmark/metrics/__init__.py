"""Sample-quality metrics: FID (Inception-V3, pytorch-fid weights), FD_DINOv2 and PRDC (DINOv2 ViT-L/14), and the
offline stand-in fd_effnet (EfficientNet-Lite0), all through one FeatureNetwork interface and one preprocessing
protocol (dgm-eval --clean_resize), with cached reference statistics.

    evaluate_samples(samples_dir_or_images, dataset, metrics=("fid", "fd_dinov2", "prdc"), ...) -> dict
"""
from benchmark.metrics.evaluate import evaluate_samples
from benchmark.metrics.features import FeatureNetwork, ImageSource, ResizePreprocess, clean_resize, extract_features
from benchmark.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from benchmark.metrics.prdc import prdc
from benchmark.metrics.reference import ReferenceStats, reference_stats

__all__ = [
    "FeatureNetwork", "ImageSource", "ResizePreprocess", "ReferenceStats", "clean_resize", "evaluate_samples",
    "extract_features", "frechet_distance", "frechet_distance_from_features", "gaussian_stats", "prdc",
    "reference_stats",
]
