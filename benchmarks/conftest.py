"""`pytest benchmarks/ --benchmark`: speed checks, skipped without the flag so plain pytest stays fast.

Each benchmark times minicl and a reference side by side in the same process and records the
ratio; the session ends with one table and writes benchmarks/results/<machine>-<date>.json.
"""

import datetime
import os
import platform
import re
from pathlib import Path

import pytest
import torch

ROWS: list[dict] = []


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", help="run the benchmarks in benchmarks/")


def machine_name() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{platform.machine()}-cpu{os.cpu_count()}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def cpu_kind() -> str:
    """The CPU model and the flags that decide minicl's CPU precision (bf16 needs avx512_bf16 or amx)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {
        key.strip(): value.strip() for key, value in (line.split(":", 1) for line in info.splitlines() if ":" in line)
    }
    flags = set(fields.get("flags", "").split())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    return f"{name} [{' '.join(shown) or 'none of avx2/avx512/amx'}]"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["kind"] = "benchmark"  # what docs/render.py reads it as


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["cpu_kind"] = cpu_kind()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if config.getoption("--benchmark") and not config.getoption("benchmark_json", None):
        results = Path(__file__).parent / "results"
        results.mkdir(exist_ok=True)
        config.option.benchmark_json = results / f"{machine_name()}-{datetime.date.today()}.json"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run with `pytest benchmarks/ --benchmark`")
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def report(benchmark):
    """report(name, minicl_s, reference_s, **info): one row of the closing table, kept in the JSON too."""

    def add(name: str, minicl: float, reference: float | None, unit: str = "s", **info):
        row = {"name": name, "minicl": minicl, "reference": reference, "unit": unit, **info}
        row["ratio"] = reference / minicl if reference else None
        ROWS.append(row)
        benchmark.extra_info.update(row)

    return add


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    tr = terminalreporter
    tr.section(f"minicl benchmarks on {machine_name()} (ratio = reference / minicl; > 1: minicl faster)")
    tr.write_line(f"CPU: {cpu_kind()}, {torch.get_num_threads()} torch threads")
    tr.write_line(f"{'benchmark':58} {'minicl':>12} {'reference':>12} {'ratio':>8}  notes")
    for r in ROWS:
        ref = f"{r['reference']:.4g}" if r["reference"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        notes = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("name", "minicl", "reference", "unit", "ratio")
        )
        tr.write_line(f"{r['name']:58} {r['minicl']:>10.4g}{r['unit']:>2} {ref:>12} {ratio:>8}  {notes}")
