#!/usr/bin/env python3
"""Times `cedar-edge test` on a 1,000-case suite, component against native.

Copies policies/airflow-gitlab, writes 1,000 cases over its users, actions,
resources and contexts, records the native decisions as the expectations,
then runs the suite through each backend several times and prints medians.

    python3 benches/scripts/suite_speed.py [path/to/cedar-edge]
"""
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target/release/cedar-edge")
RUNS = 7

users = ["alice", "bob", "carol", "dave", "erin"]
actions = ["read", "trigger", "edit"]
dags = ["etl_daily", "reporting", "ml_training", "feature_backfill"]
contexts = [
    {"mfa": mfa, "source_ip": ip, "token_age_seconds": age}
    for mfa in (True, False)
    for ip in ("10.20.30.40", "203.0.113.7")
    for age in (60, 1800, 5000, 7200, 30, 3599, 3601, 10, 100, 2000, 3000, 4000, 900, 901, 0, 1)
]


def cases():
    combos = itertools.product(contexts, users, actions, dags)
    for index, (context, user, action, dag) in enumerate(itertools.islice(combos, 1000)):
        yield {
            "name": f"case {index}",
            "principal": f'Airflow::User::"{user}"',
            "action": f'Airflow::Action::"{action}"',
            "resource": f'Airflow::Dag::"{dag}"',
            "context": context,
            "expect": "deny",
        }


def run(bundle, backend, fmt="human"):
    started = time.perf_counter()
    result = subprocess.run(
        [CLI, "test", str(bundle), "--backend", backend, "--format", fmt],
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, result


def main():
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "airflow-1000"
        shutil.copytree(REPO / "policies/airflow-gitlab", bundle)
        shutil.rmtree(bundle / "tests")
        (bundle / "tests").mkdir()
        suite = bundle / "tests/generated.json"
        generated = list(cases())
        suite.write_text(json.dumps({"cases": generated}))
        # The native decisions become the expectations.
        _, first = run(bundle, "native", "json")
        answers = {case["name"]: case["actual"] for case in json.loads(first.stdout)["cases"]}
        for case in generated:
            case["expect"] = answers[case["name"]]
        suite.write_text(json.dumps({"cases": generated}))
        timings = {}
        for backend in ("native", "component"):
            samples = []
            for _ in range(RUNS):
                elapsed, result = run(bundle, backend)
                if result.returncode != 0:
                    sys.exit(f"{backend} run failed:\n{result.stdout[-2000:]}\n{result.stderr}")
                samples.append(elapsed)
            timings[backend] = statistics.median(samples)
        allowed = sum(1 for case in generated if case["expect"] == "allow")
        print(f"1000 cases ({allowed} allow), median of {RUNS} runs, wall time of `cedar-edge test`:")
        for backend, seconds in timings.items():
            print(f"  {backend:9} {seconds * 1000:8.1f} ms")
        print(f"  ratio     {timings['component'] / timings['native']:8.2f}x")


if __name__ == "__main__":
    main()
