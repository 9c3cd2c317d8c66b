"""Sample-quality metrics: FID (Inception-V3, pytorch-fid weights), FD_DINOv2 and PRDC (DINOv2 ViT-L/14), and the
offline stand-in fd_effnet (EfficientNet-Lite0), all through one FeatureNetwork interface and one preprocessing
protocol (dgm-eval --clean_resize), with cached reference statistics; and the metric card in each feature space
(KID, class KID, Vendi, copy rate; CMMD in CLIP space), every metric a resampler of the same bootstrap (card.py).

    evaluate_samples(samples_dir_or_images, dataset, metrics=("fid", "fd_dinov2", "prdc"), ...) -> dict
    CardFiles(cache_dir).card(result, folder)(indices) -> {column: value}       (what the leaderboard resamples)
"""
from benchmark.metrics.card import CardFiles, SampleSetCard, SpaceInputs
from benchmark.metrics.evaluate import evaluate_samples
from benchmark.metrics.features import FeatureNetwork, ImageSource, ResizePreprocess, clean_resize, extract_features
from benchmark.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from benchmark.metrics.prdc import prdc
from benchmark.metrics.reference import ReferenceStats, reference_stats

__all__ = [
    "CardFiles", "SampleSetCard", "SpaceInputs",
    "FeatureNetwork", "ImageSource", "ResizePreprocess", "ReferenceStats", "clean_resize", "evaluate_samples",
    "extract_features", "frechet_distance", "frechet_distance_from_features", "gaussian_stats", "prdc",
    "reference_stats",
]
