#!/usr/bin/env python3
"""Where the gateway's CPU goes, with authorization off and on, in one run.

Runs the gateway load bench (target/release/examples/load-bench), attaches
`perf record --call-graph dwarf` to each of its two gateway processes once
the load starts, and charges every sample to one part of the request path,
the most specific first. Each share is turned into microseconds per request
with the CPU time per request that the same run measured.

    cargo build --release -p cedar-edge-gateway --bins --examples
    python3 benches/scripts/gateway_profile.py [SECONDS] [CONNECTIONS] [component|native]

perf (Debian's `linux-perf`) must be allowed to attach: run as root or
with kernel.perf_event_paranoid at most 1. Sampling costs CPU of its own,
so the bench's figures in this run read higher than in a run without it.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# LOAD_BENCH picks another build of the bench (and so of the gateway next
# to it), such as a copy of an earlier commit's.
BENCH = os.environ.get("LOAD_BENCH", str(ROOT / "target/release/examples/load-bench"))
FREQUENCY = "999"

# (part, frame patterns): a sample belongs to the first part any of whose
# patterns matches a frame of its call stack.
PARTS = [
    ("JWT verification (RS256, token JSON)",
     [r"jwt::Verifier::verify", r"jwt::unverified_issuer", r"jwt::decode_segment"]),
    ("decision: the backend's call (component: lower, lift, pool)",
     [r"Backend>::authorize_async", r"ComponentBackend::call_authorize", r"NativeBackend",
      r"cedar_edge_core::bundle::Bundle::authorize"]),
    ("mapping: claims, method, path to a Cedar request",
     [r"cedar_edge_mapping::Mapping::map$"]),
    ("audit record: built, redacted, serialised",
     [r"Gateway::count_and_write", r"AuditLog::record", r"audit::redact", r"audit::serialise",
      r"audit::Redacted", r"DecisionRecord::to_json"]),
    ("audit writer task: file writes", [r"audit::write_records"]),
    ("header checks, hygiene, target",
     [r"Mapping::check_headers", r"headers::to_remove", r"headers::check",
      r"set_forwarded_for", r"Mapping::target", r"fold_header_name",
      r"Gateway::client_address", r"Mapping::headers_to_remove"]),
    ("forwarding: upstream client, request side",
     [r"send_request", r"hyper_util::client::legacy"]),
    ("upstream connection task", [r"UpgradeableConnection", r"hyper::client::"]),
    ("rest of the request handler (copies, ids, allocation)", [r"Gateway::handle", r"Gateway::proxy"]),
    ("client connection: HTTP/1 parse and write",
     [r"hyper::proto::h1", r"GracefulConnectionFuture", r"cedar_edge_gateway::Tracked",
      r"cedar_edge_gateway::run::"]),
    ("tokio scheduler, epoll, wake-ups", [r"tokio::", r"mio::", r"epoll", r"futex", r"schedule"]),
]
# Compiled guest code has no symbols for perf: its samples have no
# known frame at all.
GUEST = "guest code (JIT, no symbols)"
OTHER = "other"


def stacks(text):
    frames = []
    for line in text.splitlines():
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[0] in " \t":
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else "[unknown]")
        else:
            frames = []
    if frames:
        yield frames


def breakdown(data):
    script = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,tid,ip,sym", "--no-inline"],
        capture_output=True, text=True, errors="replace", check=True).stdout
    counts = Counter()
    for frames in stacks(script):
        for part, patterns in PARTS:
            if any(re.search(pattern, frame) for pattern in patterns for frame in frames):
                counts[part] += 1
                break
        else:
            unknown = all(frame == "[unknown]" for frame in frames)
            counts[GUEST if unknown else OTHER] += 1
    return counts


def main():
    args = sys.argv[1:4] or ["10", "1", "component"]
    bench = subprocess.Popen([str(BENCH), *args, "1"], stdout=subprocess.PIPE, text=True)
    output, recorders = [], []
    work = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    pids = {}
    for line in bench.stdout:
        output.append(line)
        print(line, end="", flush=True)
        if match := re.match(r"gateway processes: authorization off (\d+), on (\d+)", line):
            pids = {"off": match[1], "on": match[2]}
        if line.startswith(tuple("0123456789")) and "load average before" in line:
            for name, pid in pids.items():
                recorders.append(subprocess.Popen(
                    ["perf", "record", "-F", FREQUENCY, "--call-graph", "dwarf,32768",
                     "-p", pid, "-o", str(work / f"{name}.data")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    bench.wait()
    for recorder in recorders:
        recorder.send_signal(signal.SIGINT)
        recorder.wait()
    cpu = {}
    for line in output:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 5 and cells[1].startswith("gateway") and cells[5].endswith("µs"):
            cpu["off" if "authorization off" in cells[1] else "on"] = float(cells[5].split()[0])
    counts = {name: breakdown(str(work / f"{name}.data")) for name in pids}
    print("\n| part of the request path | off: µs per request | on: µs per request | difference |")
    print("| --- | --- | --- | --- |")
    for part in [part for part, _ in PARTS] + [GUEST, OTHER]:
        share = {name: counts[name][part] / max(1, sum(counts[name].values())) for name in pids}
        micros = {name: share[name] * cpu.get(name, 0.0) for name in pids}
        print(f"| {part} | {micros['off']:.1f} | {micros['on']:.1f} | "
              f"{micros['on'] - micros['off']:+.1f} |")
    print(f"| total (CPU per request) | {cpu.get('off', 0):.1f} | {cpu.get('on', 0):.1f} | "
          f"{cpu.get('on', 0) - cpu.get('off', 0):+.1f} |")
    print(f"\nsamples: off {sum(counts['off'].values())}, on {sum(counts['on'].values())}; "
          f"perf data in {work}")


if __name__ == "__main__":
    main()
