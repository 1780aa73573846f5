"""GGUF benchmark: llama.cpp's llama-bench and miniqwen3 on the same GGUF file, side by side in one run.

    python benchmarks/bench_gguf.py FILE.gguf [FILE.gguf ...] --llama-bench PATH   (or $LLAMA_BENCH)
    python benchmarks/bench_gguf.py FILE.gguf --skip-llama-bench    # miniqwen3 only
    python benchmarks/bench_gguf.py FILE.gguf --skip-miniqwen3      # llama-bench only

Prints the CPU (lscpu: model, cores, the SIMD flags that decide llama.cpp's kernels) first. For each file:
- llama-bench: `llama-bench -m FILE -p PROMPT -n DECODE -t THREADS -r REPS -o json`: prefill of PROMPT
  tokens (pp) and decode of DECODE tokens (tg), tok/s averaged over REPS runs;
- miniqwen3, in a subprocess: the file read once into the page cache (llama-bench holds its whole file in
  memory before it times anything; miniqwen3 memory-maps it, and another big process, llama-bench with its
  repacked copy among them, may have pushed its pages out); `miniqwen3.load(FILE, backend="numba")`; a warm-up call (the same prefill and
  one decoded token: compiles the Numba kernels or loads them from the cache, and reads the file's pages
  the prompt touches); then on a fresh KV cache a prefill of PROMPT random tokens with
  `model.forward(ids, cache, last_only=True, trace=RoutingTrace())` and DECODE greedy tokens one at a time,
  each with the same trace. Peak RSS is that subprocess's `ru_maxrss` (read by a monitor process with
  `resource.getrusage(RUSAGE_CHILDREN)`, so that no other child, llama-bench included, is counted). The
  model file is memory-mapped, so its pages that were read count in the RSS.
Writes benchmarks/results/gguf[-TAG].json (every figure, the machine, the command, the load average) and
gguf[-TAG].md (the table with the ratios miniqwen3 / llama-bench).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SIMD_FLAGS = ("avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16")


# --- the machine ---------------------------------------------------------------------------------

def cpu_info() -> dict:
    """lscpu's model name, core count and flags, and which SIMD extensions are present."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("Flags", "").split()
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    return {"model": fields.get("Model name", "?"), "cpus": fields.get("CPU(s)", "?"),
            "simd_present": [f for f in SIMD_FLAGS if f in flags],
            "simd_absent": [f for f in SIMD_FLAGS if f not in flags],
            "flags": flags, "mem_GiB": mem / 2**20, "python": platform.python_version(), "numpy": np.__version__}


# --- llama-bench ---------------------------------------------------------------------------------

def run_llama_bench(tool: Path, path: Path, args, depth: int = 0) -> dict:
    """llama-bench's prefill and decode tok/s on one file; with `depth`, after that many tokens of context
    (`-d`: llama-bench fills its KV cache with them before it times)."""
    cmd = [str(tool), "-m", str(path), "-p", str(args.prompt), "-n", str(args.decode), "-t", str(args.threads),
           "-r", str(args.reps), "-o", "json"] + (["-d", str(depth)] if depth else [])
    load = os.getloadavg()
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "command": " ".join(cmd)}
    runs = json.loads(done.stdout)
    result = {"command": " ".join(cmd), "wall_s": time.perf_counter() - t, "loadavg_before": load, "raw": runs}
    for r in runs:
        phase = "prefill" if r["n_gen"] == 0 else "decode"
        result[f"{phase}_tok_s"] = r["avg_ts"]
        result[f"{phase}_tok_s_stddev"] = r["stddev_ts"]
        result["build"] = f"{r.get('build_commit', '?')} ({r.get('build_number', '?')})"
        result["backend"] = r.get("backends", r.get("backend", "?"))
        result["model_type"] = r.get("model_type", "?")
        result["options"] = {k: r[k] for k in ("n_batch", "n_ubatch", "flash_attn", "repack", "load_mode",
                                                "type_k", "type_v", "n_threads") if k in r}
    return result


# --- miniqwen3, in a subprocess --------------------------------------------------------------------

def worker(spec: dict) -> dict:
    """Load the file, warm up, then prefill and decode with a routing trace; return the figures."""
    import numba
    import miniqwen3
    from miniqwen3 import RoutingTrace

    # The file is read once into the page cache before timing (llama-bench too loads its whole file, and
    # repacks it into its own memory, before it times anything); read(), not the map, so RSS is unchanged.
    t0 = time.perf_counter()
    buf = bytearray(64 * 2**20)
    with open(spec["path"], "rb") as f:
        while f.readinto(buf):
            pass
    del buf
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = miniqwen3.load(spec["path"], backend="numba")
    result = {"page_cache_read_s": warm_s, "load_s": time.perf_counter() - t0, "numba_threads": numba.get_num_threads(),
              "layers": model.config.num_hidden_layers}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, spec["prompt"])

    t = time.perf_counter()
    cache = model.new_cache()
    logits = model.forward(ids, cache, last_only=True)
    model.forward(np.array([int(logits[0].argmax())]), cache, last_only=True)
    result["first_call_s"] = time.perf_counter() - t
    del cache

    trace = RoutingTrace()
    cache = model.new_cache()
    cache.reserve(model.config, spec["prompt"] + spec["decode"])
    t = time.perf_counter()
    logits = model.forward(ids, cache, last_only=True, trace=trace)
    result["prefill_s"] = time.perf_counter() - t
    result["prefill_tok_s"] = spec["prompt"] / result["prefill_s"]
    token = int(logits[0].argmax())
    t = time.perf_counter()
    for _ in range(spec["decode"]):
        logits = model.forward(np.array([token]), cache, last_only=True, trace=trace)
        token = int(logits[0].argmax())
    result["decode_s"] = time.perf_counter() - t
    result["decode_tok_s"] = spec["decode"] / result["decode_s"]
    result["trace_layers"] = len(trace.layers)
    result["trace_records"] = len(trace.records)
    result["self_maxrss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def monitor(spec: dict) -> dict:
    """Run the worker as this process's only child and add its peak RSS (RUSAGE_CHILDREN)."""
    # this script imports NumPy before miniqwen3 could set OpenBLAS's spin timeout: set it as miniqwen3 does
    env = dict(os.environ, NUMBA_NUM_THREADS=str(spec["threads"]))
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=spec["timeout"])
    if done.returncode != 0:
        return {"error": done.stderr[-3000:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20   # KiB -> GiB
    return result


def run_miniqwen3(path: Path, args) -> dict:
    spec = {"path": str(path), "prompt": args.prompt, "decode": args.decode, "threads": args.threads,
            "timeout": args.timeout}
    load = os.getloadavg()
    t = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--monitor", json.dumps(spec)], capture_output=True, text=True,
                          timeout=args.timeout + 60)
    if done.returncode != 0:
        return {"error": done.stderr[-3000:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(wall_s=time.perf_counter() - t, loadavg_before=load)
    return result


# --- the run -------------------------------------------------------------------------------------

def wait_for_quiet(minutes: float, limit: float = 0.8) -> float:
    """Other people's jobs share these cores: wait up to `minutes` for the 1-minute load to drop below
    `limit`; return the load when going ahead."""
    deadline = time.time() + 60 * minutes
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def file_info(path: Path) -> dict:
    """Size, architecture, depth and tensor types (count per type) of a GGUF file."""
    import gguf
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    types = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"path": str(path), "bytes": path.stat().st_size, "architecture": arch,
            "block_count": reader.fields[f"{arch}.block_count"].contents(), "tensor_types": types}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--monitor", help=argparse.SUPPRESS)
    ap.add_argument("--llama-bench", type=Path, default=os.environ.get("LLAMA_BENCH"),
                    help="path of llama.cpp's llama-bench (or $LLAMA_BENCH)")
    ap.add_argument("--prompt", type=int, default=64, help="prefill tokens")
    ap.add_argument("--decode", type=int, default=64, help="decoded tokens")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions")
    ap.add_argument("--skip-llama-bench", action="store_true")
    ap.add_argument("--skip-miniqwen3", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--wait", type=float, default=0, help="minutes to wait at most for a quiet machine before "
                                                           "each measurement (1-minute load below 0.8)")
    ap.add_argument("--tag", default="", help="results file name suffix: gguf-TAG.json / .md")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.monitor:
        print(json.dumps(monitor(json.loads(args.monitor))))
        return
    if not args.files:
        ap.error("give one or more .gguf files")
    if not args.skip_llama_bench:
        tool = args.llama_bench or shutil.which("llama-bench")
        if tool is None or not Path(tool).is_file():
            ap.error("llama-bench not found: give --llama-bench PATH, set $LLAMA_BENCH, or --skip-llama-bench")
        args.llama_bench = Path(tool)

    started = time.time()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cpus']} CPUs, {cpu['mem_GiB']:.1f} GiB; "
          f"SIMD present: {' '.join(cpu['simd_present'])}; absent: {' '.join(cpu['simd_absent'])}", flush=True)
    rows = []
    for path in args.files:
        info = file_info(path)
        print(f"{path.name}: {info['bytes'] / 2**30:.2f} GiB, {info['architecture']}, {info['block_count']} layers, "
              f"{info['tensor_types']}", flush=True)
        row = {"file": info}
        if not args.skip_llama_bench:
            wait_for_quiet(args.wait)
            row["llama_bench"] = lb = run_llama_bench(args.llama_bench, path, args)
            print(f"  llama-bench: " + (f"prefill {lb['prefill_tok_s']:.1f} tok/s, decode {lb['decode_tok_s']:.2f} tok/s"
                                        if "error" not in lb else "FAILED " + lb["error"][-300:]), flush=True)
        if not args.skip_miniqwen3:
            wait_for_quiet(args.wait)
            row["miniqwen3"] = mq = run_miniqwen3(path, args)
            print(f"  miniqwen3:   " + (f"prefill {mq['prefill_tok_s']:.1f} tok/s, decode {mq['decode_tok_s']:.2f} "
                                        f"tok/s, peak RSS {mq['peak_rss_GiB']:.2f} GiB"
                                        if "error" not in mq else "FAILED " + mq["error"][-600:]), flush=True)
        for phase in ("prefill", "decode"):
            a, b = row.get("miniqwen3", {}).get(f"{phase}_tok_s"), row.get("llama_bench", {}).get(f"{phase}_tok_s")
            if a and b:
                row[f"{phase}_ratio"] = a / b
        rows.append(row)

    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "duration_s": time.time() - started, "cpu": cpu, "loadavg_end": os.getloadavg(),
              "settings": {"prompt": args.prompt, "decode": args.decode, "threads": args.threads, "reps": args.reps},
              "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"gguf-{args.tag}" if args.tag else "gguf"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


def _num(row: dict, who: str, key: str, fmt: str) -> str:
    value = row.get(who, {}).get(key)
    return format(value, fmt) if value is not None else "-"


def markdown(report) -> str:
    cpu, s = report["cpu"], report["settings"]
    lines = [
        "# GGUF benchmark: llama-bench and miniqwen3 on the same file", "",
        f"`{report['command']}` on {report['date']}, {report['duration_s'] / 60:.1f} min.  ",
        f"CPU: {cpu['model']}, {cpu['cpus']} CPUs, {cpu['mem_GiB']:.1f} GiB; SIMD present: "
        f"{', '.join(cpu['simd_present'])}; absent: {', '.join(cpu['simd_absent'])}.  ",
        f"{s['threads']} threads; prefill {s['prompt']} tokens, decode {s['decode']} tokens "
        f"(llama-bench: mean of {s['reps']} runs; miniqwen3: one run after a warm-up call, with a routing trace).",
        "",
        "| file | size GiB | layers | llama-bench prefill tok/s | miniqwen3 prefill tok/s | ratio "
        "| llama-bench decode tok/s | miniqwen3 decode tok/s | ratio | miniqwen3 peak RSS GiB | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        f = row["file"]
        load = row.get("llama_bench", row.get("miniqwen3", {})).get("loadavg_before", [float("nan")])[0]
        lines.append(
            f"| {Path(f['path']).name} | {f['bytes'] / 2**30:.3g} | {f['block_count']} | "
            f"{_num(row, 'llama_bench', 'prefill_tok_s', '.1f')} | {_num(row, 'miniqwen3', 'prefill_tok_s', '.1f')} | "
            f"{format(row['prefill_ratio'], '.2f') + 'x' if 'prefill_ratio' in row else '-'} | "
            f"{_num(row, 'llama_bench', 'decode_tok_s', '.2f')} | {_num(row, 'miniqwen3', 'decode_tok_s', '.2f')} | "
            f"{format(row['decode_ratio'], '.2f') + 'x' if 'decode_ratio' in row else '-'} | "
            f"{_num(row, 'miniqwen3', 'peak_rss_GiB', '.2f')} | {load:.2f} |")
    lines += ["", "Tensor types per file: " + "; ".join(
        f"{Path(r['file']['path']).name} {r['file']['tensor_types']}" for r in report["results"]) + ".", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
