"""Figures: metric-vs-w plots and sample grids are written as valid PNGs."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.harness import plots


def runs(seeds=(0, 1)):
    rows = []
    for d, dataset in enumerate(["caltech101-32", "cub100-32", "third"]):
        for seed in seeds:
            noise = 0.3 * seed
            rows.append({"dataset": dataset, "phase": "selection", "method": "none", "w": 1.0, "seed": seed,
                         "fid": 20 + d + noise,
                         "precision": 0.5 + noise / 10})
            for w in (1.5, 2.0, 2.5, 3.0):
                rows.append({"dataset": dataset, "phase": "selection", "method": "cfg", "w": w, "seed": seed,
                             "fid": 20 + d - 4 * (w - 1) + 3 * (w - 1) ** 2 + noise, "precision": 0.5 + 0.1 * w})
                rows.append({"dataset": dataset, "phase": "selection", "method": "dog", "w": w, "seed": seed,
                             "fid": 20 + d - 6 * (w - 1) + 2.5 * (w - 1) ** 2 + noise, "precision": 0.55 + 0.1 * w})
    return rows


def assert_png(path, min_size=(200, 150)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something was drawn
    return pixels


def test_metric_vs_w_one_png_per_metric(tmp_path):
    paths = plots.plot_metrics_vs_w(runs(), tmp_path / "figs", title="test")
    assert set(paths) == {"fid", "precision"}
    assert paths["fid"] == tmp_path / "figs" / "fid_vs_w.png"
    wide = assert_png(paths["fid"])
    assert wide.shape[1] > wide.shape[0]  # three panels side by side
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fid_vs_w.png", "precision_vs_w.png"]
    # one seed: no error bars, still a figure; a single dataset, a single panel
    assert_png(plots.plot_metric_vs_w(runs(seeds=(0,)), "fid", tmp_path / "one.png", datasets=["cub100-32"]))
    with pytest.raises(ValueError, match="no 'fd_dinov2' values"):
        plots.plot_metric_vs_w(runs(), "fd_dinov2", tmp_path / "x.png")
    # the leaderboard's report-seed numbers drawn on top, with their intervals
    board = pd.DataFrame([{"dataset": "cub100-32", "method": m, "rule": "best w", "w": w, "fid": f,
                           "fid_low": f - 1, "fid_high": f + 1} for m, w, f in (("cfg", 1.5, 20.0), ("dog", 2.0, 17.0))])
    plain = assert_png(plots.plot_metric_vs_w(runs(seeds=(0,)), "fid", tmp_path / "a.png", datasets=["cub100-32"]))
    marked = assert_png(plots.plot_metric_vs_w(runs(seeds=(0,)), "fid", tmp_path / "b.png", datasets=["cub100-32"],
                                               board=board))
    assert plain.shape != marked.shape or (plain != marked).any()


def test_image_grid_layout():
    images = np.stack([np.full((4, 5, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = plots.image_grid(images, pad=1)  # 5 images -> 3 columns, 2 rows
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (grid[1:5, 1:6] == 10).all() and (grid[1:5, 7:12] == 20).all() and (grid[6:10, 1:6] == 40).all()
    assert (grid[6:10, 13:18] == 255).all()  # the empty sixth cell is padding colour
    with pytest.raises(ValueError, match="uint8"):
        plots.image_grid(images.astype(np.float32))


def test_sample_grids_and_composition(tmp_path):
    rng = np.random.default_rng(0)
    panels = {}
    for label in ("fine-tune only", "CFG w=1.5", "DoG w=1.5"):
        images = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
        path = plots.save_image_grid(images, tmp_path / f"{label}.png", nrow=4, scale=2)
        with Image.open(path) as image:
            assert image.size == ((4 * 34 + 2) * 2, (4 * 34 + 2) * 2)
        panels[label] = path
    out = plots.compose_sample_grids(panels, tmp_path / "samples.png", title="cub100-32")
    pixels = assert_png(out, min_size=(600, 200))
    assert pixels.shape[1] > 2 * pixels.shape[0]
    with pytest.raises(ValueError):
        plots.compose_sample_grids({}, tmp_path / "none.png")


def test_every_method_is_in_the_metric_vs_w_plot(tmp_path, monkeypatch):
    """A user's method (w and a parameter of its own), a labelled variant and a method without w are drawn beside
    CFG and DoG, and their report points too; not only the three built-in names."""
    rows = runs(seeds=(0,))
    for w in (1.5, 2.0):
        rows.append({"dataset": "cub100-32", "phase": "selection", "method": "mixed-null", "w": w, "params": "mix=0.5",
                     "seed": 0, "fid": 18.0 + w, "precision": 0.5})
        rows.append({"dataset": "cub100-32", "phase": "selection", "method": "dog-apg", "w": w, "params": "eta=0",
                     "seed": 0, "fid": 17.0 + w, "precision": 0.5})
    rows.append({"dataset": "cub100-32", "phase": "selection", "method": "cfg+dog", "w": float("nan"),
                 "params": "w_cfg=1.5 w_dog=2", "seed": 0, "fid": 16.0, "precision": 0.5})
    board = pd.DataFrame([{"dataset": "cub100-32", "method": "mixed-null", "rule": "best w", "w": 1.5, "fid": 19.0,
                           "fid_low": 18.0, "fid_high": 20.0}])
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=120: figures.append(fig) or path)
    plots.plot_metric_vs_w(rows, "fid", tmp_path / "x.png", datasets=["cub100-32"], board=board)
    labels = figures[0].axes[0].get_legend_handles_labels()[1]
    assert {"CFG", "DoG", "mixed-null mix=0.5", "dog-apg eta=0"} <= set(labels), labels
    assert any(label.startswith("cfg+dog") and "no w" in label for label in labels), labels
    drawn = [line.get_color() for line in figures[0].axes[0].lines]
    assert plots.method_style("mixed-null", ["cfg+dog", "dog-apg", "mixed-null"])[1] in drawn
