"""Hearth vs Synapse, same machine, same load, one run.

    .venv/bin/python bench/run.py [--engine sqlite|postgres|both] [--quick]
                                  [--only hearth|synapse] [--keep] [--no-push-compare]

For each engine: start Hearth, run every scenario, record its peak RSS, stop it; then the same for
Synapse (installed on first use into bench/.venv-synapse); then, unless --no-push-compare, the
send scenario on fresh Hearth servers with push rule evaluation on and off. Only one server runs
at a time, so they never compete for the two cores. Prints a table per engine and writes
bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
from scenarios import Bench, Params  # noqa: E402
from pyspy import Profiler, summarize  # noqa: E402
from servers import SERVERS, ensure_synapse_venv, remove_tree, versions, wait_for_quiet  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_one(kind: str, engine: str, params: Params, workroot: str,
              py_spy: str | None = None, scenarios: tuple[str, ...] = Bench.SCENARIOS
              ) -> dict[str, Any]:
    server = SERVERS[kind](engine, workroot)
    log(f"{kind} on {engine}: starting (port {server.port})")
    profiler = None
    try:
        server.start()
        idle_rss = server.rss_kb()
        log(f"{kind} on {engine}: up in {server.start_seconds:.1f}s, RSS {idle_rss} kB")
        background = wait_for_quiet(log, (server.pid, os.getpid()), max_wait=params.quiet_wait_s)
        if py_spy:
            raw = os.path.join(workroot, f"profile-{kind}-{engine}.raw")
            profiler = Profiler(py_spy, server.pid, raw)
        results = asyncio.run(Bench(server, params, log).run(scenarios))
        if profiler:
            profiler.stop()
            summary_path = os.path.join(report.RESULTS_DIR, f"profile-{kind}-{engine}.txt")
            os.makedirs(report.RESULTS_DIR, exist_ok=True)
            with open(summary_path, "w") as f:
                f.write(f"py-spy profile of {kind} on {engine} during the whole load "
                        f"(setup included)\n\n{summarize(raw)}\n")
            log(f"wrote {summary_path}")
        peak = server.peak_rss_kb()
        results.update({
            "start_s": round(server.start_seconds, 2),
            "background_cpu_cores_before": round(background, 2),
            "idle_rss_mb": round((idle_rss or 0) / 1024, 1),
            "peak_rss_mb": round((peak or 0) / 1024, 1),
            "final_rss_mb": round((server.rss_kb() or 0) / 1024, 1),
            "tracebacks_in_log": server.count_in_logs("Traceback (most recent call last)"),
        })
        if not server.alive():
            raise RuntimeError(f"{kind} died during the run:\n{server.log_tail()}")
        return results
    except Exception as e:
        log(f"{kind} on {engine}: FAILED: {e}")
        return {"failed": f"{type(e).__name__}: {e}", "log_tail": server.log_tail(20)}
    finally:
        if profiler:
            profiler.stop()
        server.cleanup()


PUSH_KEYS = ("send_msgs_per_s", "send_p50_ms", "send_p99_ms")
CPU_KEYS = ("server_cpu_cores", "db_cpu_cores", "client_cpu_cores", "other_cpu_cores")


def push_compare(engine: str, params: Params, workroot: str) -> dict[str, Any]:
    """The send scenario on fresh Hearth servers, push rule evaluation on and off, in the order
    on, off, off, on, ... (so a drift in the machine's load affects both alike); the median of
    each side."""
    order = [("on", "off") if r % 2 == 0 else ("off", "on") for r in range(params.push_rounds)]
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    try:
        for r, pair in enumerate(order):
            for side in pair:
                server = SERVERS["hearth"](engine, workroot, tag=f"-push-{side}-{r}",
                                           extra_config={"push": {"enabled": side == "on"}})
                log(f"hearth on {engine}, push {side} (round {r + 1}/{len(order)}): starting")
                try:
                    server.start()
                    wait_for_quiet(log, (server.pid, os.getpid()),
                                   max_wait=min(5.0, params.quiet_wait_s))
                    res = asyncio.run(Bench(server, params, log).run(("send",)))
                    if not server.alive():
                        raise RuntimeError(f"hearth died:\n{server.log_tail()}")
                    if res.get("errors"):
                        raise RuntimeError(f"request errors: {res['error_samples'][:3]}")
                    runs[side].append({k: res[k] for k in (*PUSH_KEYS, "send_count")}
                                      | {k: res["phases"]["send"][k] for k in CPU_KEYS})
                finally:
                    server.cleanup()
    except Exception as e:
        log(f"push comparison on {engine}: FAILED: {e}")
        return {"failed": f"{type(e).__name__}: {e}", "runs": runs}
    out: dict[str, Any] = {"rounds": len(order),
                           "order": ", ".join(s for pair in order for s in pair), "runs": runs}
    for side in ("on", "off"):
        out[side] = {k: round(statistics.median(x[k] for x in runs[side]), 2) for k in PUSH_KEYS}
    out["diff_pct"] = {k: round((out["on"][k] - out["off"][k]) / out["off"][k] * 100, 1)
                       for k in PUSH_KEYS if out["off"][k]}
    # The target: with push on, throughput within 10% of push off.
    out["met"] = out["on"]["send_msgs_per_s"] >= 0.9 * out["off"]["send_msgs_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="a smaller load: a ~2 minute smoke run")
    ap.add_argument("--only", choices=tuple(SERVERS), help="run one server only (no comparison)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' work dirs and logs")
    ap.add_argument("--profile", metavar="PY_SPY",
                    help="path to a py-spy binary: profile each server during the load and write "
                         "bench/results/profile-<server>-<engine>.txt")
    ap.add_argument("--no-push-compare", action="store_true",
                    help="skip the Hearth push on/off comparison (run by default with Hearth)")
    ap.add_argument("--scenarios", default=",".join(Bench.SCENARIOS),
                    help="comma-separated subset, for debugging (delivery needs join, "
                         "incremental_sync needs initial_sync); results are not written")
    args = ap.parse_args(argv)
    scenarios = tuple(x for x in args.scenarios.split(",") if x)
    unknown = set(scenarios) - set(Bench.SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(Bench.SCENARIOS)}")
    partial = set(scenarios) != set(Bench.SCENARIOS)

    params = Params.quick() if args.quick else Params()
    engines = ("sqlite", "postgres") if args.engine == "both" else (args.engine,)
    kinds = (args.only,) if args.only else ("hearth", "synapse")
    if "synapse" in kinds:
        ensure_synapse_venv(log)
    workroot = tempfile.mkdtemp(prefix="hearth-bench-")
    log(f"work dir {workroot}; engines {', '.join(engines)}; {'quick' if args.quick else 'full'} run")
    started = time.monotonic()
    tables = []
    try:
        for engine in engines:
            per_server = {kind: bench_one(kind, engine, params, workroot, args.profile, scenarios)
                          for kind in kinds}
            push = None
            if "hearth" in kinds and not args.no_push_compare:
                push = push_compare(engine, params, workroot)
            doc = {
                "engine": engine,
                "quick": args.quick,
                "finished_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "versions": versions(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()},
                "params": asdict(params),
                "servers": per_server,
                "comparison": report.compare(per_server.get("hearth", {}), per_server.get("synapse", {})),
                "push_compare": push,
            }
            table = report.console_table(engine, doc["comparison"])
            if push is not None:
                table += "\n\n" + report.console_push_table(engine, push)
            tables.append(table)
            print("\n" + table + "\n", flush=True)
            for kind, res in per_server.items():
                if res.get("failed"):
                    print(f"{kind} FAILED: {res['failed']}")
                elif res.get("errors"):
                    print(f"{kind}: {res['errors']} request errors, e.g. {res['error_samples'][:3]}")
            if not args.only and not partial:
                log(f"wrote {report.write_json(engine, doc)}")
            elif args.keep:
                with open(os.path.join(workroot, f"results-{engine}.json"), "w") as f:
                    json.dump(doc, f, indent=2)
        if not args.only and not partial:
            log(f"wrote {report.write_markdown()}")
    finally:
        if not args.keep:
            remove_tree(workroot)
    log(f"total {time.monotonic() - started:.0f}s")
    if len(tables) > 1:
        print("\n" + "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
