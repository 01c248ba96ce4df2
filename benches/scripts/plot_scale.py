#!/usr/bin/env python3
"""Plots decision latency against bundle size from the scale benchmark.

Reads target/bench-results/scale.json (written by
`cargo bench -p cedar-edge-benches --bench scale`) and writes
docs/scale.png: p50 (solid) and p99 (dashed) per engine, log-log.
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
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
