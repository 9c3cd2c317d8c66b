"""`dogbench perf` plumbing on a tiny model (a smoke test of the command, not a timing)."""
import json

from benchmark.cli import main


def test_perf_command_writes_rates_and_the_device(tmp_path, one_thread):
    out = tmp_path / "perf.json"
    assert main(["perf", "--device", "cpu", "--model", "DiT-N/8", "--image-size", "16", "--in-channels", "3",
                 "--num-classes", "5", "--batch-size", "2", "--train-batch-size", "2", "--measure-steps", "1",
                 "--repeat", "1", "--no-compile", "--skip-features", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"].startswith("CPU") and r["model"] == "DiT-N/8"
    for key in ("dog_reference", "dog_fast", "cfg_reference", "cfg_fast", "none_fast", "finetune_fast"):
        assert r[key] > 0, key
    assert r["dog_over_cfg_fast"] > 0 and r["gflops_per_forward"] > 0
    assert r["paper_protocol_gpu_hours"] > 0  # the estimate from the measured rates
