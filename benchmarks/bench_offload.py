"""Experts offloaded to the file against a plain memory map, at the same memory budget, on a MoE GGUF larger than
the memory allowed (issue 14: "run a model whose experts do not all fit in the memory allowed ... with an
in-process expert cache over the memory-mapped file, and measure tokens/s against cache size").

    python benchmarks/bench_offload.py /work/big/Qwen3-30B-A3B-random-Q8_0.gguf --budgets 6 10 14 18

For each memory budget M (GiB), two contenders, each in its own process inside a memory cgroup limited to M (cgroup
v1, `memory.limit_in_bytes`: it caps the process's memory and the page cache it fills; needs root), the page cache
dropped before each:
- mmap:    `miniqwen3.load(file)` as it is: the kernel's page cache is the expert cache (whole pages, all layers
           together, the kernel's LRU lists);
- offload: `model.offload_experts(C)` (`miniqwen3/offload.py`), C the most experts per layer whose slots fit in M
           beside the rest of the weights and a working set of --margin GB; the experts are read with preadv and
           dropped from the page cache.
Plus the memory map with the whole machine (no cgroup). Each runs a --prompt-token prompt, then decodes --decode
tokens, all fixed random ids, the same for all (a random model's greedy output repeats itself, and so would its
routing); decode tok/s is over those tokens. Reported: the disk bytes read
per decoded token (/proc/self/io read_bytes), the experts' hit rate in the slots (offload), the cgroup's peak.
The routing of a random-weight model is near uniform (see scripts/make_random_gguf.py), so a cache of C of E
experts hits about C/E of the time: the curve here is the cost of misses, not a trained router's locality
(notebook 07 measures that on the tiny model).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
CGROUP = Path("/sys/fs/cgroup/memory/miniqwen3-bench")
GiB = 2**30


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def worker(spec: dict) -> dict:
    """One contender, in this process: load, (offload), prompt, greedy decode."""
    if spec.get("cgroup"):
        (CGROUP / "cgroup.procs").write_text(str(os.getpid()))
    import miniqwen3
    t0 = time.perf_counter()
    model = miniqwen3.load(spec["path"])
    caches = model.offload_experts(spec["capacity"], spec.get("readers", 4)) if spec.get("capacity") else []
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 100000, spec["prompt"])
    cache = model.new_cache()
    t0 = time.perf_counter()
    logits = model.forward(ids, cache, last_only=True)
    prefill_s = time.perf_counter() - t0
    steps_before = [len(c.stats.hits) for c in caches]
    read_before = sum(c.stats.read_seconds for c in caches)
    bytes0, t0 = read_bytes(), time.perf_counter()
    times = []
    for token in rng.integers(1000, 100000, spec["decode"]):   # fixed random tokens: a random model's greedy
        t1 = time.perf_counter()                                # output repeats itself, and so would its routing
        logits = model.forward(np.array([token]), cache)
        times.append(time.perf_counter() - t1)
    decode_s = time.perf_counter() - t0
    disk = read_bytes() - bytes0
    hits = sum(sum(c.stats.hits[s:]) for c, s in zip(caches, steps_before))
    misses = sum(sum(c.stats.misses[s:]) for c, s in zip(caches, steps_before))
    return {"load_s": load_s, "prefill_s": prefill_s, "prefill_tok_s": spec["prompt"] / prefill_s,
            "decode_tok_s": spec["decode"] / decode_s, "token_s": times,
            "disk_GB_per_token": disk / spec["decode"] / 1e9,
            "hit_rate": hits / max(hits + misses, 1) if caches else None,
            "slots_GB": sum(c.nbytes for c in caches) / 1e9,
            "read_s_per_token": (sum(c.stats.read_seconds for c in caches) - read_before) / spec["decode"]
                                if caches else None,
            "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def run(spec: dict, timeout: float) -> dict:
    if spec.get("cgroup"):
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(int(spec["budget_GiB"] * GiB)))
        (CGROUP / "memory.max_usage_in_bytes").write_text("0")
    drop_page_cache()
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout)
    out = {"spec": spec, "returncode": p.returncode}
    if p.returncode == 0:
        out.update(json.loads(p.stdout.strip().splitlines()[-1]))
    else:
        out["error"] = (p.stderr or "")[-800:]
    if spec.get("cgroup"):
        out["cgroup_peak_GB"] = int((CGROUP / "memory.max_usage_in_bytes").read_text()) / 1e9
        out["oom_killed"] = "oom_kill 1" in (CGROUP / "memory.oom_control").read_text()
    return out


def sizes(path: Path) -> dict:
    """Bytes of one expert (gate + up + down) and of everything that is not an expert."""
    import miniqwen3
    model = miniqwen3.load(str(path), backend="numpy")
    c = model.config
    from miniqwen3.weights import MoEWeights
    m = next(layer.mlp for layer in model.weights.layers if isinstance(layer.mlp, MoEWeights))
    expert = sum(w.nbytes for w in (m.gate_proj, m.up_proj, m.down_proj)) // c.num_experts
    layers = sum(1 for i in range(c.num_hidden_layers) if c.is_sparse_layer(i))
    return {"expert_bytes": expert, "moe_layers": layers, "experts": c.num_experts, "top_k": c.num_experts_per_tok,
            "file_bytes": path.stat().st_size, "other_bytes": path.stat().st_size - expert * layers * c.num_experts}


def disk_read_speed(path: Path, gib: float = 2.0) -> float:
    """GB/s of reading the file's middle in 5 MB preads after dropping the page cache (an expert miss's pattern)."""
    drop_page_cache()
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(5 * 2**20)
    start, n, t0 = path.stat().st_size // 3, int(gib * GiB) // len(buf), time.perf_counter()
    for i in range(n):
        os.preadv(fd, [buf], start + i * len(buf))
    s = time.perf_counter() - t0
    os.close(fd)
    return n * len(buf) / s / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, nargs="?")
    ap.add_argument("--budgets", type=float, nargs="+", default=[6, 10, 14, 18], help="GiB")
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--readers", type=int, default=4, help="threads reading an offloaded layer's misses")
    ap.add_argument("--margin", type=float, default=1.0, help="GB left for the working set beside the weights")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "offload")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from bench_engine import machine_info
    t_start = time.time()
    s = sizes(args.gguf)
    report = {"command": " ".join(["python", "benchmarks/bench_offload.py", *sys.argv[1:]]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "sizes": s, "disk_GBps": disk_read_speed(args.gguf), "runs": [],
              "load_average_start": os.getloadavg()}
    print(json.dumps({k: report[k] for k in ("machine", "sizes", "disk_GBps")}), flush=True)
    fixture = HERE.parent / "tests" / "fixtures" / "gguf" / "moe-Q8_0.gguf"   # the kernels for slots, compiled once
    run({"path": str(fixture), "capacity": 2, "prompt": 8, "decode": 2}, args.timeout)
    base = {"path": str(args.gguf), "prompt": args.prompt, "decode": args.decode, "readers": args.readers}
    specs = [dict(base, name="mmap, whole machine")]
    per_slot = s["expert_bytes"] * s["moe_layers"]
    for i, budget in enumerate(args.budgets):
        capacity = int((budget * GiB - s["other_bytes"] - args.margin * 1e9) // per_slot)
        capacity = min(capacity, s["experts"])
        pair = [dict(base, name=f"mmap, {budget:g} GiB", cgroup=True, budget_GiB=budget)]
        if capacity >= s["top_k"]:
            pair.append(dict(base, name=f"offload C={capacity}, {budget:g} GiB", cgroup=True, budget_GiB=budget,
                             capacity=capacity))
        specs += pair if i % 2 else pair[::-1]
    for spec in specs:
        r = run(spec, args.timeout)
        report["runs"].append(r)
        print(spec["name"], {k: r.get(k) for k in ("decode_tok_s", "prefill_tok_s", "hit_rate", "disk_GB_per_token",
                                                   "cgroup_peak_GB", "returncode")}, flush=True)
    report["disk_GBps_end"] = disk_read_speed(args.gguf)
    report["minutes"] = (time.time() - t_start) / 60
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report) -> str:
    m, s = report["machine"], report["sizes"]
    lines = ["# Offloaded experts against a memory map, at the same memory budget", "",
             f"`{report['command']}` on {report['date']}, {report['minutes']:.1f} min.  ",
             f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {m.get('mem_GB', 0):.0f} GB, SIMD "
             f"{', '.join(m.get('simd', []))}; disk read {report['disk_GBps']:.2f} GB/s at the start, "
             f"{report['disk_GBps_end']:.2f} at the end (2 GiB in 5 MB preads, page cache dropped; a virtual disk "
             f"whose host caches what was read recently).  ",
             f"File: {s['file_bytes'] / 1e9:.2f} GB, {s['moe_layers']} MoE layers x {s['experts']} experts of "
             f"{s['expert_bytes'] / 1e6:.2f} MB (top-{s['top_k']}: {s['moe_layers'] * s['top_k'] * s['expert_bytes'] / 1e9:.2f}"
             f" GB of experts a token), {s['other_bytes'] / 1e9:.2f} GB of other weights.  ",
             "Each contender in its own process, page cache dropped before it; a budget is a memory cgroup's limit "
             f"(process memory and the page cache it fills). Offloaded layers read their misses "
             f"{report['runs'][-1]['spec'].get('readers', 1)} at a time.", "",
             "| contender | prefill tok/s | decode tok/s | expert hit rate | uniform C/E | disk GB / token | "
             "read s / token | slots GB | cgroup peak GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        sp = r["spec"]
        if r["returncode"] != 0:
            why = "killed by the cgroup's OOM" if r.get("oom_killed") else f"exit {r['returncode']}"
            lines.append(f"| {sp['name']} | {why} | | | | | | | |")
            continue
        c = sp.get("capacity")
        f = (lambda v, fmt: "" if v is None else format(v, fmt))
        lines.append(f"| {sp['name']} | {r['prefill_tok_s']:.2f} | {r['decode_tok_s']:.3f} | {f(r['hit_rate'], '.3f')} "
                     f"| {f(c / s['experts'] if c else None, '.3f')} | {r['disk_GB_per_token']:.2f} | "
                     f"{f(r['read_s_per_token'], '.2f')} | {r['slots_GB']:.1f} | {f(r.get('cgroup_peak_GB'), '.1f')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
