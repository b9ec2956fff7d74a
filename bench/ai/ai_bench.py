"""Runs the AI gateway comparison for bench/ai.sh (see there for the settings).

For each repetition, concurrency and target, in that order so that drift hits every target
alike: wrk posts a chat request for DURATION seconds while the other gateways are paused
(SIGSTOP); the gateway's CPU time (its whole process tree, from /proc) and peak RSS are
recorded, and for the direct runs the mock's, as a yardstick of what serving a request costs on
the machine. So is the share of CPU 1's time the hypervisor took (steal, from /proc/stat): on a
virtual machine, time stolen while a process runs may be charged to it. Then sse_load opens concurrent
streams. Added latency is the gateway's percentile minus the direct percentile of the same
repetition. nginx and HAProxy, proxying to the same mock with kept-alive connections, are
yardsticks: what a plain proxy adds on the machine, the floor for any gateway's figures.
Prints markdown tables; raw outputs go to RESULTS_DIR.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from report import parse_wrk  # noqa: E402

ENV = os.environ.get
DURATION = int(ENV("DURATION", "10"))
REPS = int(ENV("REPS", "2"))
CONCS = [int(c) for c in ENV("CONCS", "1 10 64").split()]
TARGETS = ENV("TARGETS", "direct nginx-proxy haproxy portico litellm portkey").split()
YARDSTICKS = ("nginx-proxy", "haproxy")
STREAMS = [int(n) for n in ENV("STREAMS", "1 100 1000").split()]
PEER_STREAMS = int(ENV("PEER_STREAMS", "100"))
PACE_MS = int(ENV("PACE_MS", "20"))
PIECES = int(ENV("PIECES", "50"))
LITELLM_WORKERS = ENV("LITELLM_WORKERS", "2")
RESULTS = ENV("RESULTS_DIR") or os.path.join(BENCH, "results", time.strftime("ai-%Y%m%dT%H%M%SZ", time.gmtime()))
RELEASE = os.path.join(REPO, "target", "release")

MOCK, STREAM_MOCK, PORTICO, LITELLM, PORTKEY, NGINX_PROXY, HAPROXY = 19100, 19101, 19110, 19120, 19130, 19140, 19150
COMPLETION = ('{"id":"chatcmpl-mock123","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
              '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"logprobs":null,'
              '"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}')
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
PORTKEY_HEADERS = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{MOCK}/v1"}
URLS = {
    "direct": f"http://127.0.0.1:{MOCK}/v1/chat/completions",
    "portico": f"http://127.0.0.1:{PORTICO}/v1/chat/completions",
    "litellm": f"http://127.0.0.1:{LITELLM}/v1/chat/completions",
    "portkey": f"http://127.0.0.1:{PORTKEY}/v1/chat/completions",
    "nginx-proxy": f"http://127.0.0.1:{NGINX_PROXY}/v1/chat/completions",
    "haproxy": f"http://127.0.0.1:{HAPROXY}/v1/chat/completions",
}
STREAM_URLS = dict(URLS, direct=f"http://127.0.0.1:{STREAM_MOCK}/v1/chat/completions")
STREAM_HEADERS = {"portkey": {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{STREAM_MOCK}/v1",
                              "authorization": "Bearer dummy"}}

scratch = tempfile.mkdtemp(prefix="portico-ai-bench-")
processes = {}


def pinned(cpu, command, **kwargs):
    return subprocess.Popen(["taskset", "-c", str(cpu)] + command, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(scratch, f"{os.path.basename(command[0])}.err"), "ab"), **kwargs)


def wait_for(url, headers=None, data=None, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            request = urllib.request.Request(url, data=data, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status < 500:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    sys.exit(f"{url} did not come up; see {scratch}")


def tree(pid):
    """The process and all its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for p in frontier:
            try:
                with open(f"/proc/{p}/task/{p}/children") as f:
                    children += [int(c) for c in f.read().split()]
            except OSError:
                pass
        pids += children
        frontier = children
    return pids


def cpu_seconds(pid):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


def cpu1_ticks():
    """(steal, all) ticks of CPU 1, where the gateways and the mocks run."""
    with open("/proc/stat") as f:
        fields = next(line for line in f if line.startswith("cpu1 ")).split()[1:]
    return int(fields[7]), sum(int(v) for v in fields[:8])


def rss_mib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def start_all():
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(scratch, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1; pid {scratch}/nginx.pid; error_log {scratch}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {scratch}; keepalive_timeout 65; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{MOCK} reuseport backlog=4096;
    location = /v1/chat/completions {{ default_type application/json; client_body_buffer_size 64k; return 200 '{COMPLETION}'; }}
    location / {{ return 404; }} }} }}
""")
    subprocess.run(["taskset", "-c", "1", "nginx", "-c", f"{scratch}/nginx.conf", "-p", scratch], check=True)
    processes["stream-mock"] = pinned(1, [f"{RELEASE}/examples/ai_mock", f"127.0.0.1:{STREAM_MOCK}", str(PACE_MS), str(PIECES)])
    if "nginx-proxy" in TARGETS:
        with open(os.path.join(scratch, "proxy.conf"), "w") as f:
            f.write(f"""worker_processes 1; pid {scratch}/proxy.pid; error_log {scratch}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {scratch}; proxy_temp_path {scratch}; keepalive_timeout 65;
  keepalive_requests 1000000; upstream mock {{ server 127.0.0.1:{MOCK}; keepalive 64; }}
  server {{ listen 127.0.0.1:{NGINX_PROXY} reuseport backlog=4096;
    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
        processes["nginx-proxy"] = pinned(1, ["nginx", "-c", f"{scratch}/proxy.conf", "-p", scratch, "-g", "daemon off;"])
        wait_for(URLS["nginx-proxy"], data=BODY.encode())
    if "haproxy" in TARGETS:
        with open(os.path.join(scratch, "haproxy.cfg"), "w") as f:
            f.write(f"""global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend gateway
  bind 127.0.0.1:{HAPROXY}
  default_backend mock
backend mock
  server mock 127.0.0.1:{MOCK}
""")
        processes["haproxy"] = pinned(1, ["haproxy", "-f", f"{scratch}/haproxy.cfg"])
        wait_for(URLS["haproxy"], data=BODY.encode())
    if "portico" in TARGETS:
        with open(os.path.join(scratch, "portico.yaml"), "w") as f:
            f.write(f"""ai_providers:
  - {{name: mock, kind: openai_compatible, base_url: "http://127.0.0.1:{MOCK}/v1", keys: [{{name: k, key: dummy}}]}}
  - {{name: streams, kind: openai_compatible, base_url: "http://127.0.0.1:{STREAM_MOCK}/v1", keys: [{{name: k, key: dummy}}]}}
ai_models:
  - {{name: gpt-4o-mini, targets: [{{provider: mock, model: gpt-4o-mini}}]}}
  - {{name: stream, targets: [{{provider: streams, model: gpt-4o-mini}}]}}
services: [{{name: llm, ai: {{}}}}]
routes: [{{name: llm, paths: ["/v1/*"], service: llm}}]
""")
        processes["portico"] = pinned(1, [f"{RELEASE}/portico", "serve", "--config", f"{scratch}/portico.yaml",
                                          "--data-dir", f"{scratch}/portico-data", "--listen", f"127.0.0.1:{PORTICO}",
                                          "--admin-listen", f"127.0.0.1:{PORTICO + 1}", "--workers", "1",
                                          "--analytics", "false"])
        wait_for(URLS["portico"], {"content-type": "application/json"}, BODY.encode())
    if "litellm" in TARGETS:
        with open(os.path.join(scratch, "litellm.yaml"), "w") as f:
            f.write(f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:{MOCK}/v1", api_key: dummy}}
  - model_name: stream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:{STREAM_MOCK}/v1", api_key: dummy}}
litellm_settings: {{callbacks: [], num_retries: 0, request_timeout: 30}}
""")
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
                   LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true", LITELLM_MODE="PRODUCTION")
        env.pop("DATABASE_URL", None)
        processes["litellm"] = pinned(1, [f"{BENCH}/ai/.venv/bin/litellm", "--config", f"{scratch}/litellm.yaml",
                                          "--host", "127.0.0.1", "--port", str(LITELLM), "--num_workers", LITELLM_WORKERS],
                                      env=env, cwd=scratch)
        wait_for(URLS["litellm"], {"content-type": "application/json", "authorization": "Bearer dummy"}, BODY.encode(), 180)
    if "portkey" in TARGETS:
        processes["portkey"] = pinned(1, ["node", f"{BENCH}/ai/node_modules/@portkey-ai/gateway/build/start-server.js",
                                          f"--port={PORTKEY}", "--headless"], cwd=scratch)
        wait_for(URLS["portkey"], dict(PORTKEY_HEADERS, **{"content-type": "application/json",
                                                             "authorization": "Bearer dummy"}), BODY.encode())


def stop_all():
    subprocess.run(["nginx", "-c", f"{scratch}/nginx.conf", "-p", scratch, "-s", "stop"], stderr=subprocess.DEVNULL)
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class Alone:
    """Pauses (SIGSTOP) every gateway but `target` while it is measured: the gateways share a
    core, and an idle gateway's timers and workers would otherwise take time from the one
    under test."""

    def __init__(self, target):
        self.paused = [pid for name, process in processes.items() if name not in (target, "stream-mock")
                       for pid in tree(process.pid)]

    def __enter__(self):
        for pid in self.paused:
            signal_if_alive(pid, signal.SIGSTOP)

    def __exit__(self, *_):
        for pid in self.paused:
            signal_if_alive(pid, signal.SIGCONT)


def signal_if_alive(pid, sig):
    """LiteLLM replaces its workers now and then: one listed when a gateway was paused may be
    gone when it is resumed."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def lua(target):
    path = os.path.join(scratch, f"{target}.lua")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer dummy"}
    if target == "portkey":
        headers.update(PORTKEY_HEADERS)
    with open(path, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n')
        for name, value in headers.items():
            f.write(f'wrk.headers["{name}"] = "{value}"\n')
    return path


def wrk(target, conns, seconds):
    command = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "--latency",
               "-s", lua(target), URLS[target]]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def mock_pid():
    with open(os.path.join(scratch, "nginx.pid")) as f:
        return int(f.read())


def measure(target, conns, rep):
    pid = processes[target].pid if target in processes else mock_pid()
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    before, steal_before = cpu_seconds(pid), cpu1_ticks()
    with Alone(target):
        out = wrk(target, conns, DURATION)
    cpu, steal_after = cpu_seconds(pid) - before, cpu1_ticks()
    done.set()
    sampler.join()
    with open(os.path.join(RESULTS, f"wrk_{target}_c{conns}_r{rep}.txt"), "w") as f:
        f.write(out)
    result = parse_wrk(out)
    # A process that ends during the run (a worker a gateway replaces) takes its CPU time with
    # it, and the tree's total can even drop: such a run has no CPU figure.
    cpu_us = cpu / max(result["requests"], 1) * 1e6 if cpu >= 0 else None
    steal = 100 * (steal_after[0] - steal_before[0]) / max(steal_after[1] - steal_before[1], 1)
    result.update(cpu_us=cpu_us, rss_mib=peak[0], steal_pct=steal)
    print(f"  {target:8} c={conns:<3} {result['rps']:>10.1f} req/s  p50 {result['p50_ms']:.3f} ms  "
          f"p99 {result['p99_ms']:.3f} ms  CPU {fmt(cpu_us, 1)} µs/req  steal {steal:.1f} %  "
          f"errors {result['socket'] + result['non2xx']}", flush=True)
    return result


def streams(target, count):
    headers = [f"{k}:{v}" for k, v in STREAM_HEADERS.get(target, {"authorization": "Bearer dummy"}).items()]
    command = ["taskset", "-c", "0", f"{RELEASE}/examples/sse_load", STREAM_URLS[target], str(count), str(5 * PACE_MS)] + headers
    try:
        with Alone(target):
            out = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, MODEL="stream")).stdout
        result = json.loads(out)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        result = {"streams": count, "completed": 0, "stalled": count, "errors": [str(error)[:200]]}
    with open(os.path.join(RESULTS, f"sse_{target}_n{count}.json"), "w") as f:
        json.dump(result, f)
    print(f"  {target:8} streams={count:<5} completed {result['completed']}  stalled {result['stalled']}  "
          f"first byte p50 {result.get('first_byte_ms', {}).get('p50', 0):.2f} ms  "
          f"gap p99 {result.get('gap_ms', {}).get('p99', 0):.2f} ms  long gaps ended at "
          f"{result.get('stalls_at_ms', {}).get('first')}–{result.get('stalls_at_ms', {}).get('last')} ms  "
          f"errors {result['errors'][:2]}", flush=True)
    return result


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def main():
    start_all()
    runs = {}
    try:
        for target in TARGETS:
            wrk(target, 10, 3)  # warm-up
        for rep in range(1, REPS + 1):
            for conns in CONCS:
                print(f"rep {rep}, c={conns}", flush=True)
                for target in TARGETS:
                    runs.setdefault((target, conns), []).append(measure(target, conns, rep))
        stream_runs = {}
        for target in TARGETS:
            for count in STREAMS:
                if target in YARDSTICKS or (target in ("litellm", "portkey") and count > PEER_STREAMS):
                    continue
                stream_runs[(target, count)] = streams(target, count)
    finally:
        stop_all()

    print(f"\n## Whole answers (median of {REPS} × {DURATION} s; added = target − direct of the same repetition; "
          "CPU and RSS of direct are the mock's; steal = share of CPU 1 taken by the hypervisor)\n")
    print("| target | conc | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU µs/req | peak RSS MiB | steal % | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for conns in CONCS:
        direct = runs.get(("direct", conns), [])
        for target in TARGETS:
            results = runs[(target, conns)]
            added = lambda key: median([r[key] - d[key] for r, d in zip(results, direct)]) if direct and target != "direct" else None  # noqa: E731
            errors = sum(r["socket"] + r["non2xx"] for r in results)
            print(f"| {target} | {conns} | {fmt(median([r['rps'] for r in results]), 0)} | "
                  f"{fmt(median([r['p50_ms'] for r in results]), 3)} | {fmt(median([r['p99_ms'] for r in results]), 3)} | "
                  f"{fmt(added('p50_ms'), 3)} | {fmt(added('p99_ms'), 3)} | "
                  f"{fmt(median([r['cpu_us'] for r in results]), 1)} | {fmt(median([r['rss_mib'] for r in results]), 1)} | "
                  f"{fmt(median([r['steal_pct'] for r in results]), 1)} | {errors} |")
    print(f"\n## Streams ({PIECES} pieces {PACE_MS} ms apart; stalled = a gap over {5 * PACE_MS} ms)\n")
    print("| target | streams | completed | stalled | first byte p50 ms | first byte p99 ms | gap p50 ms | gap p99 ms | gap max ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (target, count), r in stream_runs.items():
        first, gap = r.get("first_byte_ms", {}), r.get("gap_ms", {})
        print(f"| {target} | {count} | {r['completed']} | {r['stalled']} | {fmt(first.get('p50'))} | {fmt(first.get('p99'))} | "
              f"{fmt(gap.get('p50'))} | {fmt(gap.get('p99'))} | {fmt(gap.get('max'))} | {len(r['errors'])} |")
    c64 = {t: median([r["rps"] for r in runs.get((t, 64), [])]) for t in TARGETS}
    for peer in ("litellm", "portkey"):
        if c64.get("portico") and c64.get(peer):
            print(f"\nportico/{peer} requests/s at c64: {c64['portico'] / c64[peer]:.1f}×")
    for conns in CONCS:
        cpu = {t: median([r["cpu_us"] for r in runs.get((t, conns), [])]) for t in ("portico", "nginx-proxy")}
        if cpu["portico"] and cpu["nginx-proxy"]:
            print(f"\nportico/nginx-proxy CPU per request at c{conns}: {cpu['portico'] / cpu['nginx-proxy']:.2f}×")
    print(f"\nraw results: {RESULTS}")


if __name__ == "__main__":
    main()
