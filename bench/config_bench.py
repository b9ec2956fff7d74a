#!/usr/bin/env python3
"""Configuration-side benchmark: memory and reload speed.

Measures, on a release build of Portico:
  * idle RSS with an empty store;
  * with N routes (default 10,000) loaded: RSS, and the snapshot compile-and-swap time that
    Portico logs for each reload (`compile_ms`);
  * change-to-effect latency: the time from an admin API write returning to the proxy
    answering with the new configuration, over several changes.

Usage: python3 bench/config_bench.py PORTICO_BIN [ROUTES]
Prints a markdown table; stdlib only.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PROXY, ADMIN = 18185, 19185


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def request(url, method="GET", body=None, token=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(binary, workdir, args):
    log = open(os.path.join(workdir, "portico.log"), "w+")
    cmd = [binary, "--data-dir", workdir, "--listen", f"127.0.0.1:{PROXY}",
           "--admin-listen", f"127.0.0.1:{ADMIN}", "--workers", "1", "serve", *args]
    proc = subprocess.Popen(cmd, stderr=log, stdout=log, env={**os.environ, "PORTICO_LOG": "info"})
    for _ in range(600):
        try:
            if request(f"http://127.0.0.1:{ADMIN}/api/v1/ready")[0] == 200:
                return proc, log
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("portico did not become ready; see " + log.name)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def compile_times(log):
    log.flush()
    with open(log.name) as f:
        return [float(m) for m in re.findall(r'compile_ms="?([0-9.]+)', f.read())]


def write_routes(path, count, body):
    with open(path, "w") as f:
        f.write("services:\n  - name: backend\n    targets: [{address: 127.0.0.1:9}]\nroutes:\n")
        for i in range(count):
            f.write(f"  - name: r{i}\n    hosts: [h{i % 100}.example.com]\n"
                    f"    paths: [\"/svc{i}/items/{{id}}\", \"/svc{i}/static/*\"]\n    service: backend\n")
        f.write(f"  - name: probe\n    paths: [/probe]\n    mock: {{body: \"{body}\"}}\n")


def main():
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    rows = []
    with tempfile.TemporaryDirectory() as work:
        # Idle: empty store, first start.
        proc, log = start(binary, work, [])
        time.sleep(1)
        rows.append(("RSS idle (empty store)", f"{rss_mib(proc.pid):.1f} MiB", "< 30 MiB"))

        # Change-to-effect through the admin API.
        token = re.search(r"portico_[0-9a-f]+", open(log.name).read()).group(0)
        api = f"http://127.0.0.1:{ADMIN}/api/v1"
        status, _ = request(f"{api}/routes", "POST", {"name": "probe", "paths": ["/probe"], "mock": {"body": "v0"}}, token)
        assert status == 201, status
        latencies = []
        for version in range(1, 21):
            body = {"paths": ["/probe"], "mock": {"body": f"v{version}"}}
            status, _ = request(f"{api}/routes/probe", "PUT", body, token, {"if-match": f'"{version}"'})
            assert status == 200, status
            written = time.perf_counter()
            while request(f"http://127.0.0.1:{PROXY}/probe")[1] != f"v{version}".encode():
                time.sleep(0.0005)
            latencies.append((time.perf_counter() - written) * 1000)
        rows.append(("admin write → served (median of 20)", f"{statistics.median(latencies):.1f} ms", "< 100 ms"))
        rows.append(("admin write → served (max of 20)", f"{max(latencies):.1f} ms", "< 100 ms"))
        stop(proc)

        # N routes in file mode: load, then edit the file to measure a reload.
        config = os.path.join(work, "routes.yaml")
        write_routes(config, count, "one")
        proc, log = start(binary, work, ["--config", config])
        time.sleep(1)
        rss_loaded = rss_mib(proc.pid)
        write_routes(config, count, "two")
        while request(f"http://127.0.0.1:{PROXY}/probe")[1] != b"two":
            time.sleep(0.01)
        time.sleep(0.5)
        times = compile_times(log)
        rows.append((f"compile and swap, {count} routes (first load)", f"{times[0]:.1f} ms", "< 100 ms"))
        rows.append((f"compile and swap, {count} routes (reload)", f"{times[-1]:.1f} ms", "< 100 ms"))
        rows.append((f"RSS with {count} routes", f"{rss_loaded:.1f} MiB", "< 150 MiB"))
        rows.append((f"RSS with {count} routes after a reload", f"{rss_mib(proc.pid):.1f} MiB", "< 150 MiB"))
        stop(proc)

    print("| measure | value | target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
