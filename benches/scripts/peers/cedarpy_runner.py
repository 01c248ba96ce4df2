"""Times cedarpy on a peer-comparison workload.

    python cedarpy_runner.py WORKLOAD_DIR SECONDS MAX_PASSES

Runs in the venv run.py makes. The policy set, the schema and the entity
store are each parsed once into cedarpy's reusable handles (PolicySet,
Schema, Entities); each call is one cedarpy.is_authorized on a request dict,
which is cedarpy's public per-request API (it serialises the context to JSON
and parses the answer's JSON on every call: that is part of the time).
The loop is the one in benches/src/peers/timing.rs. Prints one JSON object;
exits non-zero on any mismatch.
"""

import json
import math
import sys
import time
from importlib import metadata
from pathlib import Path

import cedarpy


def main() -> int:
    workload = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    max_passes = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    bundle = workload / "bundle"
    requests = json.loads((workload / "requests.json").read_text())["requests"]

    started = time.perf_counter_ns()
    schema = cedarpy.Schema.from_str((bundle / "saas.cedarschema").read_text())
    policies = cedarpy.PolicySet.from_str((bundle / "generated.cedar").read_text())
    entities = cedarpy.Entities.from_json_str((bundle / "entities.json").read_text(), schema)
    load_ms = (time.perf_counter_ns() - started) / 1e6

    calls = [
        {
            "principal": {"type": r["principal"]["type"], "id": r["principal"]["id"]},
            "action": {"type": r["action"]["type"], "id": r["action"]["id"]},
            "resource": {"type": r["resource"]["type"], "id": r["resource"]["id"]},
            "context": dict(r["context"]),
        }
        for r in requests
    ]
    expected = [r["expected"] == "allow" for r in requests]

    def decide(i: int) -> bool:
        result = cedarpy.is_authorized(calls[i], policies, entities, schema)
        if result.decision == cedarpy.Decision.NoDecision:
            raise RuntimeError(f"request {i}: no decision: {result.diagnostics.errors}")
        return result.allowed

    wrong = [i for i in range(len(calls)) if decide(i) != expected[i]]
    if wrong:
        print(f"cedarpy: {len(wrong)} of {len(calls)} decisions differ from ours, first at {wrong[:8]}",
              file=sys.stderr)
        return 1

    samples: list[int] = []
    passes = 0
    clock = time.perf_counter_ns
    begun = clock()
    while passes == 0 or (passes < max_passes and (clock() - begun) / 1e9 < seconds):
        for i in range(len(calls)):
            t0 = clock()
            allowed = decide(i)
            samples.append(clock() - t0)
            if allowed != expected[i]:
                wrong.append(i)
        passes += 1
    if wrong:
        print(f"cedarpy: {len(wrong)} timed decisions differ from ours, first at {wrong[:8]}",
              file=sys.stderr)
        return 1

    samples.sort()

    def rank(fraction: float) -> int:
        return samples[min(len(samples), max(1, math.ceil(fraction * len(samples)))) - 1]

    mean = sum(samples) / len(samples)
    print(json.dumps({
        "engine": "cedarpy",
        "version": metadata.version("cedarpy"),
        "python_version": sys.version.split()[0],
        "load_ms": load_ms,
        "summary": {
            "calls": len(samples),
            "passes": passes,
            "p50_ns": rank(0.50),
            "p99_ns": rank(0.99),
            "mean_ns": round(mean),
            "decisions_per_second": 1e9 / mean,
        },
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
