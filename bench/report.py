#!/usr/bin/env python3
"""Summarise a results directory written by bench/run.sh.

Usage: python3 bench/report.py RESULTS_DIR

The directory holds:
  wrk_<target>_c<conns>_r<rep>.txt   raw `wrk --latency` output, one per run
  cpu.tsv    target, conns, rep, server CPU ticks, backend CPU ticks per run
  meta.txt   key=value lines (mode, clk_tck, versions, idle RSS, ...)

Prints a markdown table (medians over repetitions), idle memory, the ratios of
medians with, in brackets, the ratios within each repetition (the two runs of one
repetition are close in time, so on a noisy machine their median is the steadier
figure), and as the very last line: "portico/nginx requests/s ratio: X.XX (cN)"
or ": n/a".
Standard library only.
"""

import os
import re
import statistics
import sys

FILE_RE = re.compile(r"^wrk_(?P<target>[a-z0-9-]+)_c(?P<conns>\d+)_r(?P<rep>\d+)\.txt$")
# wrk prints durations with these units (see wrk's units.c).
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
KNOWN_ORDER = ["direct", "nginx", "nginx-fwd", "haproxy", "portico", "nginx-2", "portico-2", "portico-auth",
               "portico-observe"]


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(text):
    """Returns dict with rps, requests, p50_ms, p99_ms, errors, non2xx, socket."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    reqs = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not rps or not reqs:
        raise ValueError("no 'Requests/sec' / 'requests in' lines (did wrk fail?)")
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", text, re.M)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx_n = int(non2xx.group(1)) if non2xx else 0
    return {
        "rps": float(rps.group(1)),
        "requests": int(reqs.group(1)),
        "p50_ms": to_ms(p50.group(1)) if p50 else None,
        "p99_ms": to_ms(p99.group(1)) if p99 else None,
        "socket": socket_errors,
        "non2xx": non2xx_n,
    }


def read_meta(path):
    meta = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    meta[key] = value
    return meta


def read_cpu(path):
    cpu = {}
    if os.path.exists(path):
        with open(path) as f:
            next(f, None)  # header
            for line in f:
                parts = line.split()
                if len(parts) == 5:
                    t, c, r, s, b = parts
                    cpu[(t, int(c), int(r))] = (int(s), int(b))
    return cpu


def fmt_int(x):
    return f"{x:,.0f}"


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    results = argv[1]
    meta = read_meta(os.path.join(results, "meta.txt"))
    cpu = read_cpu(os.path.join(results, "cpu.tsv"))
    clk_tck = int(meta.get("clk_tck", "100"))

    runs = {}  # (target, conns) -> list of (rep, parsed, server_ticks, backend_ticks)
    problems = []
    for name in sorted(os.listdir(results)):
        m = FILE_RE.match(name)
        if not m:
            continue
        t, c, r = m.group("target"), int(m.group("conns")), int(m.group("rep"))
        with open(os.path.join(results, name)) as f:
            try:
                parsed = parse_wrk(f.read())
            except ValueError as e:
                problems.append(f"{name}: {e}")
                continue
        ticks = cpu.get((t, c, r))
        runs.setdefault((t, c), []).append((r, parsed, ticks))

    if not runs:
        print(f"no wrk results found in {results}", file=sys.stderr)
        print("portico/nginx requests/s ratio: n/a")
        return 1

    targets = meta.get("targets", "").split() or sorted(
        {t for t, _ in runs}, key=lambda t: (KNOWN_ORDER + [t]).index(t)
    )
    conns_levels = [int(c) for c in meta.get("conns", "").split()] or sorted(
        {c for _, c in runs}
    )

    print(
        f"mode {meta.get('mode', '?')} (W={meta.get('workers', '?')}), "
        f"{meta.get('reps', '?')} x {meta.get('duration_s', '?')} s per cell, "
        f"targets interleaved; {meta.get('date_utc', '')}"
    )
    for key in ("cpu", "kernel", "nginx_version", "haproxy_version", "wrk_version",
                "portico_version", "portico_git"):
        if meta.get(key):
            print(f"  {key}: {meta[key]}")
    print()
    print("| target | conns | req/s median | req/s min–max | vs nginx | p50 ms | "
          "p99 ms median (min–max) | server CPU µs/req | backend CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    medians = {}  # (target, conns) -> median rps
    total_errors = 0
    for c in conns_levels:
        for t in targets:
            if (t, c) in runs:
                medians[(t, c)] = statistics.median(p["rps"] for _, p, _ in runs[(t, c)])
        for t in targets:
            cell = runs.get((t, c))
            if not cell:
                print(f"| {t} | {c} | missing | | | | | | | |")
                continue
            rps = [p["rps"] for _, p, _ in cell]
            p50 = median_or_none([p["p50_ms"] for _, p, _ in cell])
            p99s = [p["p99_ms"] for _, p, _ in cell if p["p99_ms"] is not None]
            us_server, us_backend = [], []
            for _, p, ticks in cell:
                if ticks and p["requests"]:
                    s, b = ticks
                    us_server.append(s / clk_tck * 1e6 / p["requests"])
                    us_backend.append(b / clk_tck * 1e6 / p["requests"])
            socket_errors = sum(p["socket"] for _, p, _ in cell)
            non2xx = sum(p["non2xx"] for _, p, _ in cell)
            total_errors += socket_errors + non2xx
            errors = "0" if socket_errors + non2xx == 0 else \
                f"{socket_errors + non2xx} (non-2xx/3xx {non2xx}, socket {socket_errors})"
            nginx_med = medians.get(("nginx", c))
            vs_nginx = f"{medians[(t, c)] / nginx_med:.2f}" if nginx_med else "–"
            p99_txt = (f"{statistics.median(p99s):.2f} ({min(p99s):.2f}–{max(p99s):.2f})"
                       if p99s else "–")
            server_us = median_or_none(us_server)
            backend_us = median_or_none(us_backend)
            print(
                f"| {t} | {c} | {fmt_int(medians[(t, c)])} | "
                f"{fmt_int(min(rps))}–{fmt_int(max(rps))} | {vs_nginx} | "
                f"{'–' if p50 is None else f'{p50:.2f}'} | {p99_txt} | "
                f"{'–' if server_us is None else f'{server_us:.1f}'} | "
                f"{'–' if backend_us is None or t == 'direct' else f'{backend_us:.1f}'} | "
                f"{errors} |"
            )
    print()
    print("server CPU = the target's own processes (for direct: the backend); "
          "backend CPU comes on top for proxied targets.")

    rss = [(t, int(meta[f"rss_idle_kb.{t}"])) for t in targets if f"rss_idle_kb.{t}" in meta]
    if rss:
        print("idle RSS before load: " + ", ".join(
            f"{'backend' if t == 'direct' else t} {kb / 1024:.1f} MiB" for t, kb in rss))
    if "rss_idle_kb.portico" in meta:
        print(f"portico idle RSS: {int(meta['rss_idle_kb.portico']) / 1024:.1f} MiB "
              f"({meta['rss_idle_kb.portico']} kB)")
    for prob in problems:
        print(f"WARNING: unparsable run {prob}")
    if total_errors:
        print(f"WARNING: {total_errors} errors (non-2xx/3xx or socket) in total; see the table")

    # Ratio lines at every level; then the headline ratio (c64, else the first
    # level) once more, bare, as the LAST line, which is what callers read.
    headline = 64 if 64 in conns_levels else conns_levels[0]
    def ratio(c, peer="nginx", subject="portico", pairs=True):
        p, n = medians.get((subject, c)), medians.get((peer, c))
        if not (p and n):
            return None
        return f"{p / n:.2f}" + (paired(c, peer, subject) if pairs else "")

    def paired(c, peer, subject):
        """The ratio within each repetition, where both runs met the same load on the machine:
        on a noisy machine its median is steadier than the ratio of the two medians."""
        by_rep = {r: p["rps"] for r, p, _ in runs.get((peer, c), [])}
        ratios = [p["rps"] / by_rep[r] for r, p, _ in runs.get((subject, c), []) if by_rep.get(r)]
        if len(ratios) < 2:
            return ""
        return (f" [within a repetition: median {statistics.median(ratios):.2f}, "
                f"{min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)}]")
    for c in conns_levels:
        if ratio(c, "nginx-2", "portico-2"):
            print(f"portico-2/nginx-2 requests/s ratio at c{c}: {ratio(c, 'nginx-2', 'portico-2')}"
                  f"; portico-2/portico: {ratio(c, 'portico', 'portico-2') or 'n/a'}"
                  " (two targets, health checks, circuit breaker)")
    for c in conns_levels:
        if ratio(c, "nginx", "portico-auth") or ratio(c, "portico", "portico-auth"):
            print(f"portico-auth/nginx requests/s ratio at c{c}: {ratio(c, 'nginx', 'portico-auth') or 'n/a'}"
                  f"; portico-auth/portico: {ratio(c, 'portico', 'portico-auth') or 'n/a'}"
                  " (API key + local rate limit on the route)")
    for c in conns_levels:
        if ratio(c, "nginx", "portico-observe") or ratio(c, "portico", "portico-observe"):
            print(f"portico-observe/nginx requests/s ratio at c{c}: {ratio(c, 'nginx', 'portico-observe') or 'n/a'}"
                  f"; portico-observe/portico: {ratio(c, 'portico', 'portico-observe') or 'n/a'}"
                  " (access log to a file)")
    for c in conns_levels:
        if ratio(c, "nginx-fwd"):
            print(f"portico/nginx-fwd requests/s ratio at c{c}: {ratio(c, 'nginx-fwd')}"
                  " (nginx also setting X-Forwarded-* and X-Request-Id)")
    for c in conns_levels:
        if ratio(c):
            print(f"portico/nginx requests/s ratio at c{c}: {ratio(c)}")
    print("portico/nginx requests/s ratio: "
          + (f"{ratio(headline, pairs=False)} (c{headline})" if ratio(headline) else "n/a"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
