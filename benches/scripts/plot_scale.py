#!/usr/bin/env python3
"""Plots decision latency against bundle size from the scale benchmark.

Reads target/bench-results/scale.json (written by
`cargo bench -p cedar-edge-benches --bench scale`), writes docs/scale.png
(p50 solid and p99 dashed per engine, log-log) and prints the markdown
tables that docs/scale.md carries, so both come from the same run.
matplotlib is installed into target/plot-venv on first use.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "plot-venv"
RESULTS = ROOT / "target" / "bench-results" / "scale.json"
OUTPUT = ROOT / "docs" / "scale.png"

ENGINES = [
    ("cedar_prebuilt", "plain cedar-policy, pre-built request", "#888888"),
    ("core_native", "cedar-edge core, native", "#1f77b4"),
    ("component", "cedar-edge component (wasmtime)", "#d62728"),
    ("cedar_join_request_entities", "plain cedar-policy, request entities joined", "#bbbbbb"),
    ("component_request_entities", "cedar-edge component, request entities", "#ff9896"),
]


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("PLOT_SCALE_IN_VENV"):
        sys.exit("matplotlib did not install into " + str(VENV))
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
    env = dict(os.environ, PLOT_SCALE_IN_VENV="1")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


def main():
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(RESULTS.read_text())
    sizes = [entry["policies"] for entry in results["sizes"]]
    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for key, label, colour in ENGINES:
        if not all(key in entry["latency"] for entry in results["sizes"]):
            continue
        p50 = [entry["latency"][key]["p50_us"] for entry in results["sizes"]]
        p99 = [entry["latency"][key]["p99_us"] for entry in results["sizes"]]
        axes.plot(sizes, p50, marker="o", color=colour, label=f"{label}: p50")
        axes.plot(sizes, p99, linestyle="--", color=colour, alpha=0.7, label=f"{label}: p99")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("policies in the bundle")
    axes.set_ylabel("latency per decision (µs)")
    axes.set_title("Decision latency against bundle size (one run, 2-core machine)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(OUTPUT)
    print(f"wrote {OUTPUT}\n")
    print_tables(results)


def ratio(value):
    return f"{value:.2f}×" if value >= 0.1 else f"1/{1 / value:,.0f}"


def us(value):
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


def print_tables(results):
    sizes = results["sizes"]
    print("| policies | engine | p50 | p99 | p50 ÷ plain cedar | p50 ÷ component at 10 |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    base = next(e for e in sizes if e["policies"] == sizes[0]["policies"])
    component_at_smallest = base["latency"]["component"]["p50_us"]
    for entry in sizes:
        plain = entry["latency"]["cedar_prebuilt"]["p50_us"]
        for key, label, _ in ENGINES[:3]:
            found = entry["latency"][key]
            print(
                f"| {entry['policies']:,} | {label} | {us(found['p50_us'])} | {us(found['p99_us'])} "
                f"| {ratio(found['p50_us'] / plain)} | "
                + (f"{ratio(found['p50_us'] / component_at_smallest)} |" if key == "component" else "|")
            )
    print()
    print("| policies | plain cedar, store copied and joined | our component, request entities sliced in | plain ÷ ours |")
    print("| ---: | ---: | ---: | ---: |")
    for entry in sizes:
        join = entry["latency"]["cedar_join_request_entities"]
        ours = entry["latency"]["component_request_entities"]
        print(
            f"| {entry['policies']:,} | {us(join['p50_us'])} (p99 {us(join['p99_us'])}) "
            f"| {us(ours['p50_us'])} (p99 {us(ours['p99_us'])}) | {ratio(join['p50_us'] / ours['p50_us'])} |"
        )
    print()
    print("| policies | engine | 1 thread | 2 threads | scaling |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for entry in sizes:
        for key, found in entry["throughput"].items():
            print(
                f"| {entry['policies']:,} | {key} | {found['threads_1_per_s']:,.0f}/s "
                f"| {found['threads_2_per_s']:,.0f}/s | {found['scaling']:.2f}× |"
            )
    print()
    print("| policies | scopes matched (mean, max) | load natively | load into the component | component memory | 50 single calls | one batch of 50 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for entry in sizes:
        batch = entry["batch"]
        print(
            f"| {entry['policies']:,} | {entry['candidates_mean']:.1f}, {entry['candidates_max']} "
            f"| {entry['load_ms']['native']:,.1f} ms | {entry['load_ms']['component']:,.1f} ms "
            f"| {entry['component_peak_memory_bytes'] / 2**20:.1f} MiB "
            f"| {us(batch['single_calls_us'])} | {us(batch['one_batch_us'])} |"
        )
    start = results["start"]
    print()
    print(
        f"start: first {start['first_start_ms']:.0f} ms (compile or cache), warm {start['warm_start_us'] / 1000:.1f} ms, "
        f"instantiate {start['instantiate_us']:.1f} µs"
    )


if __name__ == "__main__":
    main()
