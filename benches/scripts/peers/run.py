#!/usr/bin/env python3
"""The peer comparison: our engines and other policy engines, on the same
policies and the same requests, in one run on this machine.

    python3 benches/scripts/peers/run.py [--sizes 100,1000,10000]

Standard library only. It installs what the peers need under target/peers/
(a venv with cedarpy and cedarling-python, an npm prefix with
@cedar-policy/cedar-wasm and @cerbos/cerbos-linux-x64), builds the
peer-* binaries of cedar-edge-benches in release, and for each policy count:

1. writes a workload with `peer-workload` (the generated bundle, requests
   with our native engine's decisions, the Rego and Cerbos translations)
   and times our native core and our component on it;
2. runs every peer on the same requests: each first checks every decision
   against ours and fails on any difference, then times one call at a time;
3. tries Cedarling, once, and records why it cannot decide (see
   cedarling_probe.py).

Each timed step holds /tmp/cedar-edge-bench.lock, so it never overlaps the
criterion benchmarks. Writes target/peers/results.json and the generated
part of docs/peers.md. A peer whose run at the previous size predicts more
than --max-peer-seconds at the next size is skipped there, with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TARGET = ROOT / "target"
PEERS = TARGET / "peers"
VENV = PEERS / "venv"
NODE = PEERS / "node"
BIN = TARGET / "release"
HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "peers.md"
LOCK = "/tmp/cedar-edge-bench.lock"
BEGIN, END = "<!-- peers:begin (written by benches/scripts/peers/run.py) -->", "<!-- peers:end -->"

PIP_PINS = {"cedarpy": "4.12.2", "cedarling-python": "2.5.20"}
NPM_PINS = {"@cedar-policy/cedar-wasm": "4.13.0", "@cerbos/cerbos-linux-x64": "0.55.0"}
CEDAR_WASM = NODE / "node_modules" / "@cedar-policy" / "cedar-wasm"
CERBOS = NODE / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def bench_lock():
    """Holds the lock every timing run on this machine takes."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(cmd: list[str], timeout: float | None = None, env: dict | None = None) -> str:
    """Runs a command, returns its stdout; raises with its stderr on failure."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON in output: {stdout[-2000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- setup


def installed_pip(name: str) -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
        capture_output=True, text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def installed_npm(name: str) -> str | None:
    package = NODE / "node_modules" / name / "package.json"
    return json.loads(package.read_text()).get("version") if package.exists() else None


def setup() -> None:
    PEERS.mkdir(parents=True, exist_ok=True)
    if not (VENV / "bin" / "python").exists():
        log(f"creating {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)])
    wanted = [f"{n}=={v}" for n, v in PIP_PINS.items() if installed_pip(n) != v]
    if wanted:
        log(f"pip install {' '.join(wanted)}")
        run([str(VENV / "bin" / "pip"), "install", "--quiet", *wanted], timeout=900)
    NODE.mkdir(parents=True, exist_ok=True)
    if not (NODE / "package.json").exists():
        (NODE / "package.json").write_text('{"name": "cedar-edge-peers", "private": true}\n')
    wanted = [f"{n}@{v}" for n, v in NPM_PINS.items() if installed_npm(n) != v]
    if wanted:
        log(f"npm install {' '.join(wanted)}")
        run(["npm", "install", "--prefix", str(NODE), "--no-audit", "--no-fund", *wanted], timeout=900)


def build() -> None:
    log("cargo build --release -p cedar-edge-benches --bins")
    done = subprocess.run(
        ["cargo", "build", "--release", "-p", "cedar-edge-benches", "--bins"], cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError("the peer binaries did not build")


# ---------------------------------------------------------------- facts


def lock_version(crate: str) -> str:
    text = (ROOT / "Cargo.lock").read_text()
    found = re.search(rf'name = "{re.escape(crate)}"\nversion = "([^"]+)"', text)
    return found.group(1) if found else "?"


def tree() -> str:
    """The commit measured, and whether the work tree differed from it."""
    head = run(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).strip()
    return f"{head} with uncommitted changes" if dirty else head


def machine() -> dict:
    model = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in run(["lscpu"]).splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "node": run(["node", "--version"]).strip(),
        "python": sys.version.split()[0],
        "rustc": run(["rustc", "--version"]).strip(),
    }


def versions() -> dict:
    cerbos = run([str(CERBOS), "--version"]).splitlines()[0].strip() if CERBOS.exists() else "?"
    return {
        "cedar-policy (ours)": lock_version("cedar-policy"),
        "wasmtime (ours)": lock_version("wasmtime"),
        "regorus": lock_version("regorus"),
        "@cedar-policy/cedar-wasm": installed_npm("@cedar-policy/cedar-wasm") or "?",
        "cedarpy": installed_pip("cedarpy") or "?",
        "cerbos": cerbos,
        "cedarling-python": installed_pip("cedarling-python") or "?",
    }


# ---------------------------------------------------------------- runners


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def cerbos_server(workload: Path):
    http, grpc = free_port(), free_port()
    conf = workload / "cerbos" / "conf.yaml"
    conf.write_text(
        "server:\n"
        f'  httpListenAddr: "127.0.0.1:{http}"\n'
        f'  grpcListenAddr: "127.0.0.1:{grpc}"\n'
        "storage:\n"
        "  driver: disk\n"
        "  disk:\n"
        f'    directory: "{workload / "cerbos" / "policies"}"\n'
        "    watchForChanges: false\n"
        "audit:\n"
        "  enabled: false\n"
    )
    env = dict(os.environ, CERBOS_NO_TELEMETRY="1")
    with open(workload / "cerbos" / "server.log", "w") as server_log:
        server = subprocess.Popen(
            [str(CERBOS), "server", f"--config={conf}", "--log-level=error"],
            stdout=server_log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"cerbos exited: {(workload / 'cerbos' / 'server.log').read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/_cerbos/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("cerbos did not become healthy in 120 s")
                time.sleep(0.2)
            yield f"127.0.0.1:{http}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def peer_rows(workload: Path, args, budget: list[str], timeout: float) -> dict:
    """Each peer as a function that times it and returns its table rows."""

    def regorus() -> list[dict]:
        report = last_json(run([str(BIN / "peer-regorus"), "--workload", str(workload), *budget], timeout))
        return [
            {"engine": f"regorus ({row['variant']})", "how": row["how"], "summary": row.get("summary"),
             "error": row.get("error"), "load_ms": row.get("load_ms")}
            for row in report["rows"]
        ]

    def cedar_wasm(entities: str) -> list[dict]:
        report = last_json(run(
            ["node", str(HERE / "cedar_wasm.cjs"), str(workload), str(CEDAR_WASM), entities,
             str(args.seconds), str(args.max_passes)], timeout,
        ))
        how = {
            "slice": "in-process Node: statefulIsAuthorized on the pre-parsed policy set and schema; "
                     "each call passes the request's principal and resource with their ancestors",
            "whole": "as above, but each call passes the whole entity store (the API keeps no entities)",
        }[entities]
        return [{"engine": f"cedar-wasm ({entities} entities)", "how": how, "summary": report["summary"],
                 "load_ms": report["load_ms"], "detail": {"cedar": report["cedar_version"], "node": report["node_version"]}}]

    def cedarpy() -> list[dict]:
        report = last_json(run(
            [str(VENV / "bin" / "python"), str(HERE / "cedarpy_runner.py"), str(workload),
             str(args.seconds), str(args.max_passes)], timeout,
        ))
        return [{"engine": "cedarpy", "how": "in-process Python: cedarpy.is_authorized with pre-parsed "
                 "PolicySet, Schema and Entities handles", "summary": report["summary"], "load_ms": report["load_ms"]}]

    def cerbos() -> list[dict]:
        with cerbos_server(workload) as addr:
            report = last_json(run(
                [str(BIN / "peer-cerbos"), "--workload", str(workload), "--addr", addr, *budget], timeout,
            ))
        return [{"engine": "cerbos", "how": report["how"], "summary": report["summary"]}]

    return {
        "regorus": regorus,
        "cedar-wasm (slice)": lambda: cedar_wasm("slice"),
        "cedar-wasm (whole)": lambda: cedar_wasm("whole"),
        "cedarpy": cedarpy,
        "cerbos": cerbos,
    }


# ---------------------------------------------------------------- report


def duration(ns: float | None) -> str:
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e3:.2f} µs"


def ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "–"
    r = value / base
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def table(size: dict, versions_: dict) -> str:
    ours = {row["engine"]: row["summary"] for row in size["ours"]["engines"]}
    component, native = ours["cedar-edge component"], ours["cedar-edge native core"]
    version_of = {
        "cedar-edge": f"cedar-policy {versions_['cedar-policy (ours)']}, wasmtime {versions_['wasmtime (ours)']}",
        "regorus": versions_["regorus"],
        "cedar-wasm": versions_["@cedar-policy/cedar-wasm"],
        "cedarpy": versions_["cedarpy"],
        "cerbos": versions_["cerbos"],
    }
    lines = [
        "| engine | version | how measured | p50 | p99 | p50 ÷ our component | p99 ÷ our component "
        "| p50 ÷ our native core | p99 ÷ our native core |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [{"engine": e["engine"], "how": e["how"], "summary": e["summary"]} for e in size["ours"]["engines"]]
    rows += [row for row in size["peers"] if row.get("summary")]
    for row in rows:
        s = row["summary"]
        family = row["engine"].split(" ")[0]
        lines.append(
            f"| {row['engine']} | {version_of.get(family, '?')} | {row['how']} | {duration(s['p50_ns'])} "
            f"| {duration(s['p99_ns'])} | {ratio(s['p50_ns'], component['p50_ns'])} "
            f"| {ratio(s['p99_ns'], component['p99_ns'])} | {ratio(s['p50_ns'], native['p50_ns'])} "
            f"| {ratio(s['p99_ns'], native['p99_ns'])} |"
        )
    notes = [f"- {row['engine']}: {row['error']}" for row in size["peers"] if row.get("error")]
    notes += [f"- {note}" for note in size["skipped"]]
    return "\n".join(lines) + ("\n\nNot in this table:\n" + "\n".join(notes) if notes else "")


def write_doc(results: dict) -> None:
    m = results["machine"]
    parts = [
        BEGIN,
        "",
        f"Run of {results['finished']} on commit {results.get('tree', '?')}, "
        f"{results['requests']} requests per bundle (seed {results['seed']}), "
        f"on {m['cpu']}, {m['cores']} cores ({m['kernel']}); {m['rustc']}, Node {m['node']}, "
        f"Python {m['python']}. The whole run took {results['seconds'] / 60:.1f} minutes.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
    ]
    loads = [size["ours"].get("load_before") for size in results["sizes"].values()]
    loads += [row.get("load_before") for size in results["sizes"].values() for row in size["peers"]]
    loads = [load for load in loads if load is not None]
    if loads:
        parts += ["", f"The 1-minute load average before the timed steps ranged from {min(loads):.2f} "
                      f"to {max(loads):.2f} (2 cores): other work on the machine shows mostly in p99."]
    for n, size in results["sizes"].items():
        parts += [
            "",
            f"### {int(n):,} policies",
            "",
            f"{size['tenants']} tenants, {size['entities']:,} entities; "
            f"{size['allowed']} of {size['requests']} requests allowed. Every peer's decisions equal ours on all of them.",
            "",
            table(size, results["versions"]),
        ]
    cedarling = results.get("cedarling") or {}
    parts += [
        "",
        f"Cedarling (cedarling-python {cedarling.get('version', '?')}): {cedarling.get('status', 'not tried')}"
        + (f": `{cedarling['reason']}`" if cedarling.get("reason") else "") + ".",
        "",
        END,
    ]
    text = DOC.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < 0:
        raise RuntimeError(f"{DOC} has no {BEGIN} … {END} markers")
    DOC.write_text(text[:start] + "\n".join(parts) + text[stop + len(END):])


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="policy counts, comma-separated")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per engine and size")
    parser.add_argument("--max-passes", type=int, default=50, help="timed passes at most")
    parser.add_argument("--max-peer-seconds", type=float, default=600,
                        help="skip a peer at a size where its previous size predicts a longer run")
    parser.add_argument("--whole-entities-up-to", type=int, default=100,
                        help="time cedar-wasm with the whole entity store per call only up to this size")
    parser.add_argument("--no-setup", action="store_true", help="use target/peers as it is")
    parser.add_argument("--no-build", action="store_true", help="use the peer binaries as built")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/peers.md")
    parser.add_argument("--doc-only", action="store_true",
                        help="rewrite docs/peers.md from target/peers/results.json and stop")
    args = parser.parse_args()
    if args.doc_only:
        write_doc(json.loads((PEERS / "results.json").read_text()))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.monotonic()

    if not args.no_setup:
        setup()
    if not args.no_build:
        build()
    results = {
        "command": " ".join(sys.argv),
        "tree": tree(),
        "machine": machine(),
        "versions": versions(),
        "requests": args.requests,
        "seed": args.seed,
        "seconds_per_engine": args.seconds,
        "max_passes": args.max_passes,
        "sizes": {},
    }
    budget = ["--seconds", str(args.seconds), "--max-passes", str(args.max_passes)]
    failures: list[str] = []
    previous: dict[str, tuple[int, float]] = {}  # peer → (size, seconds it took)

    for n in sizes:
        workload = PEERS / "workloads" / str(n)
        log(f"{n} policies: workload and our engines")
        with bench_lock():
            load = os.getloadavg()[0]
            ours = last_json(run(
                [str(BIN / "peer-workload"), "--policies", str(n), "--seed", str(args.seed),
                 "--requests", str(args.requests), "--out", str(workload), *budget], timeout=1800,
            ))
        requests = json.loads((workload / "requests.json").read_text())["requests"]
        model = json.loads((workload / "model.json").read_text())
        ours["load_before"] = round(load, 2)
        size = {
            "ours": ours, "peers": [], "skipped": [],
            "tenants": model["tenants"], "entities": len(model["entities"]),
            "requests": len(requests), "allowed": sum(r["expected"] == "allow" for r in requests),
        }
        for peer, time_it in peer_rows(workload, args, budget, timeout=args.max_peer_seconds * 1.5).items():
            if peer == "cedar-wasm (whole)" and n > args.whole_entities_up_to:
                size["skipped"].append(
                    f"{peer}: run only up to {args.whole_entities_up_to:,} policies; passing the whole "
                    f"store ({size['entities']:,} entities here) on every call only shows parsing cost")
                continue
            if peer in previous:
                seen_n, seen_s = previous[peer]
                predicted = seen_s * n / seen_n
                if predicted > args.max_peer_seconds:
                    note = (f"{peer}: skipped, its {seen_n:,}-policy run took {seen_s:.0f} s, "
                            f"which predicts {predicted:.0f} s here (limit {args.max_peer_seconds:.0f} s)")
                    log(note)
                    size["skipped"].append(note)
                    continue
            log(f"{n} policies: {peer}")
            try:
                with bench_lock():
                    # Time spent waiting for the lock says nothing of the peer.
                    begun = time.monotonic()
                    load = os.getloadavg()[0]
                    rows = time_it()
                    took = time.monotonic() - begun
                for row in rows:
                    row["load_before"] = round(load, 2)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
                message = str(err).strip().splitlines()
                failures.append(f"{n} policies, {peer}: {' '.join(message[-3:])}")
                log(f"FAILED {failures[-1]}")
                continue
            previous[peer] = (n, took)
            size["peers"].extend(rows)
        results["sizes"][str(n)] = size

    if sizes:
        log("cedarling")
        workload = PEERS / "workloads" / str(sizes[0])
        try:
            results["cedarling"] = last_json(run(
                [str(VENV / "bin" / "python"), str(HERE / "cedarling_probe.py"), str(workload),
                 str(PEERS / "cedarling-store")], timeout=600,
            ))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            results["cedarling"] = {"status": "probe failed", "reason": str(err)[-500:]}

    results["failures"] = failures
    results["seconds"] = round(time.monotonic() - started, 1)
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (PEERS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {PEERS / 'results.json'} in {results['seconds']:.0f} s")
    if failures:
        log("not writing docs/peers.md: a peer failed (a mismatch is a translation bug)")
        for failure in failures:
            print(failure, file=sys.stderr)
        return 1
    if not args.no_doc:
        write_doc(results)
        log(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
