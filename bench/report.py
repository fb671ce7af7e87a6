"""Figures, targets, the console table, and the files under bench/results/."""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    # Target on ratio = Hearth / Synapse: at least `target` when higher is better, below
    # `target` when lower is better; None for a figure that is only recorded. With `absolute`,
    # the target applies to Hearth's own value instead (e.g. p99 < 100 ms, lost = 0).
    target: float | None
    absolute: bool = False
    inclusive: bool = False  # "<=" rather than "<" (a lower-is-better target)
    target_text: str | None = None


FIGURES = (
    Figure("send_msgs_per_s", "send: messages/s (20 senders, one room)", "msg/s", True, 2.0),
    Figure("send_p50_ms", "send: latency p50", "ms", False, 1.0),
    Figure("send_p99_ms", "send: latency p99", "ms", False, 1.0),
    Figure("messages_p50_ms", "/messages (1,000-event room, limit 50): p50", "ms", False, 1.0),
    Figure("messages_p99_ms", "/messages (1,000-event room, limit 50): p99", "ms", False, 1.0),
    Figure("create_rooms_per_s", "createRoom: rooms/s (one client)", "rooms/s", True, 1.0),
    Figure("create_p50_ms", "createRoom: latency p50", "ms", False, 1.0),
    Figure("create_p99_ms", "createRoom: latency p99", "ms", False, 1.0),
    Figure("create_concurrent_rooms_per_s", "createRoom: rooms/s (4 clients)", "rooms/s", True, 1.0),
    Figure("join_per_s", "join one public room: joins/s (20 at once)", "joins/s", True, 1.0),
    Figure("join_p50_ms", "join: latency p50", "ms", False, 1.0),
    Figure("join_p99_ms", "join: latency p99", "ms", False, 1.0),
    Figure("initial_sync_p50_ms", "initial /sync (100 rooms x 100 messages): p50", "ms", False,
           1 / 3, inclusive=True, target_text="<= 0.33x (3x faster)"),
    Figure("initial_sync_mean_ms", "initial /sync: mean", "ms", False,
           1 / 3, inclusive=True, target_text="<= 0.33x (3x faster)"),
    Figure("initial_sync_p99_ms", "initial /sync: p99", "ms", False, 1.0),
    Figure("incremental_sync_p50_ms", "incremental /sync, nothing new (timeout=0): p50", "ms",
           False, 1.0),
    Figure("incremental_sync_p99_ms", "incremental /sync, nothing new: p99", "ms", False, 1.0),
    Figure("delivery_p50_ms", "delivery to 200 long-polling receivers: p50", "ms", False, 1.0),
    Figure("delivery_p99_ms", "delivery to 200 long-polling receivers: p99", "ms", False, 100.0,
           absolute=True, target_text="Hearth < 100 ms"),
    Figure("delivery_lost", "delivery: lost (receiver, message) pairs", "pairs", False, 0.0,
           absolute=True, inclusive=True, target_text="Hearth = 0"),
    Figure("peak_rss_mb", "server peak RSS (VmHWM)", "MB", False, 1.0),
    Figure("final_rss_mb", "server RSS after the load (VmRSS)", "MB", False, 1.0),
)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else None


def _target_text(f: Figure) -> str | None:
    if f.target is None:
        return None
    if f.target_text:
        return f.target_text
    if f.higher_is_better:
        return f">= {f.target:g}x"
    return f"{'<=' if f.inclusive else '<'} {f.target:g}x"


def _is_met(f: Figure, h: float | None, ratio: float | None) -> bool | None:
    if f.target is None:
        return None
    v = h if f.absolute else ratio
    if v is None:
        return None
    if f.higher_is_better:
        return v >= f.target
    return v <= f.target if f.inclusive else v < f.target


def compare(hearth: dict[str, Any], synapse: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for f in FIGURES:
        h, s = _num(hearth.get(f.key)), _num(synapse.get(f.key))
        ratio = round(h / s, 3) if h is not None and s else None
        rows.append({"key": f.key, "figure": f.label, "unit": f.unit, "hearth": h, "synapse": s,
                     "ratio": ratio, "higher_is_better": f.higher_is_better,
                     "target": _target_text(f), "met": _is_met(f, h, ratio)})
    return rows


def push_rows(push: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, push on, push off, on vs off) for the push comparison."""
    out = []
    for key, label in (("send_msgs_per_s", "send: messages/s"), ("send_p50_ms", "send: p50 [ms]"),
                       ("send_p99_ms", "send: p99 [ms]")):
        on, off = push.get("on", {}).get(key), push.get("off", {}).get(key)
        diff = push.get("diff_pct", {}).get(key)
        out.append((label, _fmt(_num(on)), _fmt(_num(off)),
                    "-" if diff is None else f"{diff:+.1f}%"))
    return out


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "pairs":
        return f"{v:,.0f}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _met(m: bool | None) -> str:
    return "" if m is None else ("yes" if m else "NO")


def console_table(engine: str, rows: list[dict[str, Any]]) -> str:
    head = ("figure", "Hearth", "Synapse", "H/S", "target", "met")
    body = [(f"{r['figure']} [{r['unit']}]", _fmt(r["hearth"], r["unit"]), _fmt(r["synapse"], r["unit"]),
             "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["target"] or "", _met(r["met"]))
            for r in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    line = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w
                     for i, w in enumerate(widths))
    out = [f"== {engine} ==", line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*b) for b in body]
    return "\n".join(out)


def console_push_table(engine: str, push: dict[str, Any]) -> str:
    if not push or push.get("failed"):
        return f"== {engine}: Hearth push on vs off == " + (push or {}).get("failed", "not run")
    head = ("figure (Hearth only)", "push on", "push off", "on vs off")
    body = push_rows(push)
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    line = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w
                     for i, w in enumerate(widths))
    out = [f"== {engine}: Hearth push on vs off (median of {push['rounds']} rounds each; "
           f"target within 10%: {'met' if push.get('met') else 'NOT met'}) ==",
           line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*b) for b in body]
    return "\n".join(out)


def write_json(engine: str, doc: dict[str, Any]) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"latest-{engine}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def markdown_for(doc: dict[str, Any]) -> str:
    rows = doc["comparison"]
    out = [f"### {doc['engine']} ({'quick' if doc['quick'] else 'full'} run, {doc['finished_at']})", "",
           "| figure | Hearth | Synapse | Hearth/Synapse | target | met |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        out.append(f"| {r['figure']} [{r['unit']}] | {_fmt(r['hearth'], r['unit'])} | "
                   f"{_fmt(r['synapse'], r['unit'])} | "
                   f"{ratio} | {r['target'] or ''} | {_met(r['met'])} |")
    out.append("")
    out.append("CPU during each measured phase, in cores busy (1.0 = one core; the machine has "
               f"{doc['machine']['cpus']}): server process / PostgreSQL / load client / anything else "
               "on the machine.")
    out.append("")
    out.append("| phase | Hearth run | Synapse run |")
    out.append("| --- | --- | --- |")
    h = doc["servers"].get("hearth", {}).get("phases", {})
    s = doc["servers"].get("synapse", {}).get("phases", {})

    def cpu(ph: dict[str, Any]) -> str:
        if not ph:
            return "-"
        return (f"{ph['server_cpu_cores']:.2f} / {ph['db_cpu_cores']:.2f} / "
                f"{ph['client_cpu_cores']:.2f} / {ph['other_cpu_cores']:.2f} ({ph['wall_s']:.1f}s)")
    for phase in list(dict.fromkeys([*h, *s])):
        out.append(f"| {phase} | {cpu(h.get(phase, {}))} | {cpu(s.get(phase, {}))} |")
    push = doc.get("push_compare")
    if push and not push.get("failed"):
        out.append("")
        out.append(f"Hearth with push rule evaluation on vs off (`push: {{enabled: ...}}`), the send "
                   f"scenario only, fresh server each time, median of {push['rounds']} round(s) "
                   f"each, order {push['order']}; target: within 10% "
                   f"({'met' if push.get('met') else 'NOT met'}):")
        out.append("")
        out.append("| figure | push on | push off | on vs off |")
        out.append("| --- | ---: | ---: | ---: |")
        for row in push_rows(push):
            out.append("| " + " | ".join(row) + " |")
    elif push:
        out.append("")
        out.append(f"Push on/off comparison failed: {push['failed']}")
    errs = {k: v.get("errors") for k, v in doc["servers"].items()}
    out.append("")
    out.append(f"Request errors: {errs}. Parameters: {json.dumps(doc['params'])}.")
    return "\n".join(out)


def write_markdown() -> str:
    """bench/results/latest.md from every latest-<engine>.json present."""
    parts = ["# Latest benchmark results", "",
             "Written by `bench/run.py`. Ratio = Hearth / Synapse; for rates higher is better, "
             "for latencies and memory lower is better.", ""]
    for path in sorted(glob.glob(os.path.join(RESULTS_DIR, "latest-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        parts.append(markdown_for(doc))
        parts.append("")
    out = os.path.join(RESULTS_DIR, "latest.md")
    with open(out, "w") as f:
        f.write("\n".join(parts))
    return out
