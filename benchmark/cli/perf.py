"""``dogbench perf``: throughput of sampling, writing, fine-tuning and feature extraction as they ship."""
from __future__ import annotations

from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.devices import resolve_device
from benchmark.perf import PerfSettings, format_table, run_perf, write_record


def configure(p, name: str) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_settings_flags(p, PerfSettings)
    p.add_argument("--out", default=None, help="JSON path (default: <results>/perf/perf-<device>-<time>.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    record = run_perf(settings_from_args(PerfSettings, args), resolve_device(args.device))
    print(format_table(record))
    print(f"wrote {write_record(record, args.out)}")
    return 0
