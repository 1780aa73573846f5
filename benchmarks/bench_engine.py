"""Engine benchmark: miniqwen3 as a user gets it (`miniqwen3.load(folder)`, no backend argument), side by side
with llama.cpp's llama-bench on the same weights, transformers on the CPU and miniqwen3's plain-NumPy
reference, in one run, as ratios.

    python benchmarks/bench_engine.py --llama-cpp DIR    # the full run (~30 min): benchmarks/results/engine.{json,md}
    python benchmarks/bench_engine.py --quick ...        # short prompt, few tokens: to try the script

--llama-cpp (or $LLAMA_CPP): a llama.cpp source tree with convert_hf_to_gguf.py and build/bin/llama-bench
(tests/fixtures/gguf/README.md says how to build one); without it the llama.cpp contenders are left out.

Models (random bf16 weights, written once to benchmarks/out/ with the real Qwen3 tokenizer files beside them):
  qwen3-0.6b     the exact Qwen3-0.6B config
  qwen3-30b-a3b-2l   Qwen3-30B-A3B's shapes (hidden 2048, 128 experts, top-8, moe_intermediate 768), 2 layers
Each checkpoint is converted once by llama.cpp's convert_hf_to_gguf.py to a BF16 and a Q8_0 GGUF: the same
weights for both engines (miniqwen3 loads the Q8_0 file itself for its 8-bit figures).
Contenders, each in its own process (so compile caches and peak memory don't leak between them):
  miniqwen3 bf16 (the default path: Numba kernels from 50M parameters on, and matmul_precision "auto": bf16
  products where the CPU has AVX512-BF16), miniqwen3 bf16 fp32 products (matmul_precision="fp32": transformers'
  fp32 logits), miniqwen3 q8_0 (the Q8_0 GGUF),
  miniqwen3 numpy bf16 (the reference ops), transformers bf16 / fp32 (torch, same thread count), llama.cpp
  bf16 / q8_0 (`llama-bench -p PROMPT -n 0 -t THREADS -r 2`, then `-p 0 -n NEW -d PROMPT`: decode after the
  prompt, as miniqwen3's). Figures: prefill tok/s (a 512-token prompt,
  logits of the last position only, as a generation loop needs), decode tok/s (128 fixed tokens after it,
  KV cache), peak resident memory, load and first-call (compile) time. Decode is memory-bound, so it is also
  reported against its limit: the bytes of weights one token reads, divided by the memory bandwidth measured
  in the same run.
Long context (qwen3-0.6b): decode after --context tokens (4096) with the fp32, bf16 and q8_0 KV caches, and
llama-bench's decode at that depth (`-d`, its default f16 KV cache).
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
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO))

THREADS = os.cpu_count() or 1
WARMUP_TOKENS = 24   # the first call's prompt: long enough to take the prefill (BLAS) path as well
KEEP_EVERY = 4      # decode logits kept for the drift table: tokens 0, 4, 8, ...

QWEN3_TOKENIZER = REPO.parent / "shared" / "qwen3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
GGUF_TYPES = {"bf16": "BF16", "q8_0": "Q8_0"}     # contender dtype -> the GGUF file written for it

BYTES_PER_WEIGHT = {"bf16": 2.0, "fp32": 4.0, "q8_0": 1.125}   # q8_0 here: int8 + an fp32 scale per 32


# --- models --------------------------------------------------------------------------------------

def model_configs():
    import miniqwen3
    base = Path(miniqwen3.__file__).parent / "configs"
    dense = json.loads((base / "Qwen3-0.6B.json").read_text())
    moe = json.loads((base / "Qwen3-30B-A3B.json").read_text())
    moe.update(num_hidden_layers=2, max_window_layers=2)
    return {"qwen3-0.6b": dense, "qwen3-30b-a3b-2l": moe}


def make_checkpoint(name: str, raw: dict) -> Path:
    """A random-bf16 checkpoint for a config, written once (tensors as a real checkpoint names them)."""
    from miniqwen3.config import Qwen3Config
    from miniqwen3.weights import random_tensors, save_checkpoint
    folder = OUT / name
    if (folder / "model.safetensors").is_file() and json.loads((folder / "config.json").read_text()) == raw:
        return folder
    print(f"writing random bf16 checkpoint {folder} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = random_tensors(Qwen3Config.from_dict(raw), dtype="bf16", seed=0)
    save_checkpoint(folder, tensors)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    for f in TOKENIZER_FILES:           # llama.cpp's converter needs them; miniqwen3 reads them too
        if (QWEN3_TOKENIZER / f).is_file():
            shutil.copy(QWEN3_TOKENIZER / f, folder / f)
    return folder


def make_gguf(folder: Path, dtype: str, llama_cpp: Path) -> Path:
    """folder/model-<TYPE>.gguf, written once by llama.cpp's convert_hf_to_gguf.py (--outtype bf16 or q8_0)."""
    out = folder / f"model-{GGUF_TYPES[dtype]}.gguf"
    if out.is_file() and out.stat().st_mtime > (folder / "model.safetensors").stat().st_mtime:
        return out
    print(f"converting {folder.name} to {out.name} with llama.cpp ...", flush=True)
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    done = subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(folder), "--outfile",
                           str(out), "--outtype", dtype, "--model-name", folder.name], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        out.unlink(missing_ok=True)
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{done.stderr[-3000:]}")
    return out


def weight_bytes_per_token(raw: dict, fmt: str) -> float:
    """Bytes of weights one decoded token reads: every attention projection, the dense MLP or the router and
    K of the E experts, and the output head (one embedding row and the norms are negligible)."""
    H, D, V = raw["hidden_size"], raw["head_dim"], raw["vocab_size"]
    NH, NKV, L = raw["num_attention_heads"], raw["num_key_value_heads"], raw["num_hidden_layers"]
    per = BYTES_PER_WEIGHT[fmt]
    attn = (2 * NH * D * H + 2 * NKV * D * H) * per
    if raw.get("num_experts", 0):
        E, K, I = raw["num_experts"], raw["num_experts_per_tok"], raw["moe_intermediate_size"]
        router = E * H * (4.0 if fmt == "fp32" else 2.0)
        mlp = router + K * 3 * I * H * per
    else:
        mlp = 3 * raw["intermediate_size"] * H * per
    return L * (attn + mlp) + V * H * per


# --- memory bandwidth ----------------------------------------------------------------------------

def measure_bandwidth(gib: float = 1.0, repeats: int = 7) -> dict:
    """Read bandwidth of all cores: a Numba prange sum over an array far larger than the caches (best of
    `repeats`), and of one core."""
    import numba
    from numba import prange

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def parallel_sum(a):   # a: [chunks, n]
        parts = np.zeros(a.shape[0], np.float32)
        for c in prange(a.shape[0]):
            s = np.float32(0)
            for i in range(a.shape[1]):
                s += a[c, i]
            parts[c] = s
        return parts.sum()

    a = np.ones((256, int(gib * 2**30) // 4 // 256), np.float32)
    result = {}
    for threads in (THREADS, 1):
        numba.set_num_threads(threads)
        parallel_sum(a)
        best = min(_timed(parallel_sum, a) for _ in range(repeats))
        result[f"GBps_{threads}_threads"] = a.nbytes / best / 1e9
    numba.set_num_threads(THREADS)
    result["GBps"] = result[f"GBps_{THREADS}_threads"]
    return result


def _timed(f, *args):
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


# --- one contender, in its own process -----------------------------------------------------------

def prompt_tokens(vocab: int, prompt: int, new: int):
    rng = np.random.default_rng(42)
    return rng.integers(0, vocab, prompt), rng.integers(0, vocab, new)


def worker(spec: dict) -> dict:
    """Load, warm up, time prefill and decode; return figures and save the decode logits for comparison."""
    folder, prompt_len, new = Path(spec["folder"]), spec["prompt"], spec["new"]
    raw = json.loads((folder / "config.json").read_text())
    ids, next_ids = prompt_tokens(raw["vocab_size"], prompt_len, new)
    if spec.get("context"):                # long context: a prompt of `context` tokens, decoded after once
        ids = np.random.default_rng(43).integers(0, raw["vocab_size"], spec["context"])
        prompt_len = len(ids)
    run = _miniqwen3_runner if spec["engine"] == "miniqwen3" else _transformers_runner
    t0 = time.perf_counter()
    prefill, decode, info = run(spec, folder)
    result = {"load_s": time.perf_counter() - t0, **info}

    # first call on a short prompt (compiles, or loads compiled code from the cache), then the same again
    firsts = []
    for _ in range(2):
        t = time.perf_counter()
        state = prefill(ids[:WARMUP_TOKENS])
        decode(state, int(ids[WARMUP_TOKENS]))
        firsts.append(time.perf_counter() - t)
    result["first_call_s"], result["steady_call_s"] = firsts
    result["first_call_extra_s"] = max(0.0, firsts[0] - firsts[1])
    if spec.get("compile_only"):
        return result

    times = []
    for _ in range(spec["prefill_runs"]):
        state = None                       # free the previous run's KV cache first: one cache at a time
        t = time.perf_counter()
        state = prefill(ids)
        times.append(time.perf_counter() - t)
    result["prefill_s"] = min(times)
    result["prefill_tok_s"] = prompt_len / min(times)

    # logits of every KEEP_EVERY-th decoded token are kept for the drift table (all of them would be 78 MB of
    # the harness in the peak RSS of a 151,936-token vocabulary)
    logits = np.empty(((spec["decode_tokens"] + KEEP_EVERY - 1) // KEEP_EVERY, raw["vocab_size"]), np.float32)
    t = time.perf_counter()
    for i in range(spec["decode_tokens"]):
        row = decode(state, int(next_ids[i]))
        if i % KEEP_EVERY == 0:
            logits[i // KEEP_EVERY] = row
    result["decode_s"] = time.perf_counter() - t
    result["decode_tok_s"] = spec["decode_tokens"] / result["decode_s"]
    result["decode_tokens"] = spec["decode_tokens"]
    result["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    np.save(spec["logits_path"], logits)
    return result


def _miniqwen3_runner(spec, folder):
    import numba
    import miniqwen3
    # the default path (no backend argument) unless the contender names one; q8_0: the GGUF llama.cpp wrote
    model = miniqwen3.load(spec.get("gguf") or folder, backend=spec["backend"],
                           matmul_precision=spec.get("matmul_precision", "auto"))
    info = {"numba_threads": numba.get_num_threads(), "backend_used": model.backend,
            "matmul_precision_used": model.matmul_precision,
            "weights_GB_in_memory": model.weights.nbytes() / 1e9, "kv_cache": spec.get("kv", "fp32")}

    def prefill(ids):
        cache = model.new_cache(spec.get("kv", "fp32"))
        cache.reserve(model.config, len(ids) + spec["new"])   # as a generation loop that knows its length
        model.forward(ids, cache, last_only=True)
        return cache

    def decode(cache, token):
        return model.forward(np.array([token]), cache, last_only=True)[0]
    return prefill, decode, info


def _transformers_runner(spec, folder):
    import torch
    import transformers
    torch.set_num_threads(THREADS)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[spec["dtype"]]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    info = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "experts_implementation": getattr(model.config, "_experts_implementation", None)}
    state = {}

    @torch.inference_mode()
    def prefill(ids):
        out = model(input_ids=torch.as_tensor(ids)[None], use_cache=True, logits_to_keep=1)
        return {"past": out.past_key_values}

    @torch.inference_mode()
    def decode(st, token):
        out = model(input_ids=torch.tensor([[token]]), past_key_values=st["past"], use_cache=True)
        st["past"] = out.past_key_values
        return out.logits[0, -1].float().numpy()
    return prefill, decode, info


# --- the run -------------------------------------------------------------------------------------

CONTENDERS = [  # (name, engine, backend, dtype); backend None: what miniqwen3.load picks by itself
    ("miniqwen3 bf16", "miniqwen3", None, "bf16"),
    ("miniqwen3 q8_0", "miniqwen3", None, "q8_0"),
    ("miniqwen3 bf16 fp32 products", "miniqwen3", None, "bf16"),
    ("llama.cpp bf16", "llama.cpp", None, "bf16"),
    ("llama.cpp q8_0", "llama.cpp", None, "q8_0"),
    ("miniqwen3 numpy bf16", "miniqwen3", "numpy", "bf16"),
    ("transformers bf16", "transformers", None, "bf16"),
    ("transformers fp32", "transformers", None, "fp32"),
]
LONG_CONTEXT = [  # decode after --context tokens, qwen3-0.6b: (name, engine, KV cache, weights)
    ("miniqwen3 bf16, fp32 KV cache", "miniqwen3", "fp32", "bf16"),
    ("miniqwen3 bf16, bf16 KV cache", "miniqwen3", "bf16", "bf16"),
    ("miniqwen3 bf16, q8_0 KV cache", "miniqwen3", "q8_0", "bf16"),
    ("llama.cpp bf16, f16 KV cache", "llama.cpp", "f16", "bf16"),
]
# the contenders the targets compare run in every round, in turn (the others in the first round only): this
# machine's speed drifts by 1.3-1.5x within minutes, so each ratio is taken within a round and its median
# over the rounds reported
ROUNDS_OF = {"miniqwen3 bf16", "miniqwen3 q8_0", "miniqwen3 bf16 fp32 products", "llama.cpp bf16", "llama.cpp q8_0"}
# the pairs a target compares run one right after the other, in turn first (ABBA over the rounds), so that
# the drift within a round falls on both sides of a ratio alike
PAIRED = [("miniqwen3 bf16", "llama.cpp bf16"), ("miniqwen3 q8_0", "llama.cpp q8_0"),
          ("miniqwen3 bf16, q8_0 KV cache", "miniqwen3 bf16, fp32 KV cache")]


def round_order(runs, rnd):
    """The runs of round rnd (0-based): each pair of PAIRED side by side, its first member alternating with the
    round, and the units (pairs, single runs) rotated by the round, so that each round starts elsewhere.
    runs: [(contender tuple, long-context flag)]"""
    units, taken = [], set()
    for a, b in PAIRED:
        pair = [r for r in runs if r[0][0] in (a, b)]
        if len(pair) == 2:
            units.append(pair if rnd % 2 == 0 else pair[::-1])
            taken |= {a, b}
    units += [[r] for r in runs if r[0][0] not in taken]
    shift = rnd % len(units)
    return [r for unit in units[shift:] + units[:shift] for r in unit]


# contenders loaded with miniqwen3.load(..., matmul_precision=...) other than the default "auto" (bf16 products,
# llama.cpp's arithmetic, for bf16 weights on a CPU with AVX512-BF16; fp32 elsewhere): "fp32", transformers' fp32
# logits, side by side with the default
MATMUL_PRECISION = {"miniqwen3 bf16 fp32 products": "fp32"}


def _spawn(spec, cache_dir, timeout):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": str(THREADS)}
    if spec.get("omp_wait_policy"):
        env["OMP_WAIT_POLICY"] = spec["omp_wait_policy"]
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_llama_cpp(name, dtype, model_name, gguf, args, context=0):
    """llama-bench on the GGUF of the same weights, as miniqwen3 is measured: prefill of the prompt, then decode
    after it (`-d PROMPT`: llama-bench's decode test starts from an empty KV cache unless given a depth). With
    `context`: decode only, after that many tokens."""
    from bench_gguf import run_llama_bench
    load = os.getloadavg()
    print(f"  {name:30s} (load {load[0]:.2f}) ...", end=" ", flush=True)

    def bench(prompt, decode, depth):
        settings = argparse.Namespace(prompt=prompt, decode=decode, threads=THREADS, reps=args.llama_reps,
                                      timeout=args.timeout)
        return run_llama_bench(args.llama_bench, gguf, settings, depth=depth)
    if context:
        r = bench(0, args.context_new, context)
    else:
        r = bench(args.prompt, 0, 0)
        after = bench(0, args.new, args.prompt)
        r = {**r, **{k: v for k, v in after.items() if k.startswith("decode") or k == "error"},
             "decode_command": after.get("command")}
    r.update(contender=name, engine="llama.cpp", dtype=dtype, model=model_name, loadavg_before=load,
             gguf=str(gguf), context=context)
    if "error" in r:
        print("FAILED")
        return r
    print(", ".join(f"{k[:-6]} {r[k]:.2f} tok/s" for k in ("prefill_tok_s", "decode_tok_s") if k in r), flush=True)
    return r


def run_contender(name, engine, backend, dtype, model_name, folder, args, cache_dir, gguf=None, context=0,
                  kv="fp32", measure_compile=True):
    """One contender in a fresh process. With measure_compile, the Numba ones first run once against the
    (initially empty) cache of this model's run, to measure the compile time; the figures come from a second
    process, which loads the compiled kernels from that cache, as every later use of the package does."""
    slow = backend == "numpy"
    spec = {"engine": engine, "backend": backend, "dtype": dtype, "folder": str(folder), "gguf": gguf and str(gguf),
            "prompt": args.prompt, "new": args.context_new if context else args.new, "context": context, "kv": kv,
            "prefill_runs": 1 if slow or context else args.prefill_runs,
            "decode_tokens": min(args.new, args.reference_decode) if slow else
                             (args.context_new if context else args.new),
            "logits_path": str(OUT / f"logits-{model_name}-{name.replace(' ', '_').replace(',', '')}.npy"),
            "omp_wait_policy": args.omp_wait_policy, "matmul_precision": MATMUL_PRECISION.get(name, "auto")}
    load = os.getloadavg()
    print(f"  {name:30s} (load {load[0]:.2f}) ...", end=" ", flush=True)
    t = time.perf_counter()
    try:
        compiled = None
        if engine == "miniqwen3" and backend != "numpy" and not context and measure_compile:
            compiled = _spawn({**spec, "compile_only": True}, cache_dir, args.timeout)
        result = _spawn(spec, cache_dir, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"FAILED ({time.perf_counter() - t:.0f}s)")
        return {"contender": name, "model": model_name, "error": str(e)[-2000:], "loadavg_before": load}
    wall = time.perf_counter() - t
    # the kernels compile when the model is made (`kernels.warm_up`), or else at the first call
    result["compile_s"] = (max(0.0, compiled["load_s"] - result["load_s"]) + compiled["first_call_extra_s"]
                           if compiled else 0.0 if measure_compile else None)
    print(f"prefill {result['prefill_tok_s']:7.1f} tok/s, decode {result['decode_tok_s']:6.2f} tok/s, "
          f"rss {result['peak_rss_GB']:.2f} GB, compile {result['compile_s'] or 0:.1f}s, "
          f"first call {result['first_call_s']:.1f}s ({wall:.0f}s)", flush=True)
    return {"contender": name, "engine": engine, "backend": backend, "dtype": dtype, "model": model_name,
            "context": context, "loadavg_before": load, "loadavg_after": os.getloadavg(), "wall_s": wall, **result,
            "logits_path": spec["logits_path"]}


def run_one(name, engine, backend, dtype, m, folder, ggufs, args, cache_dir, raw, bandwidth, long,
            measure_compile):
    """One contender on model m (a LONG_CONTEXT one when `long`), or None when it cannot run here."""
    if long:
        if engine == "llama.cpp":
            return run_llama_cpp(name, "bf16", m, ggufs[(m, "bf16")], args, context=args.context) if ggufs else None
        return run_contender(name, engine, None, "bf16", m, folder, args, cache_dir, context=args.context, kv=backend)
    if (dtype == "q8_0" or engine == "llama.cpp") and not ggufs:
        return None
    if engine == "llama.cpp":
        return run_llama_cpp(name, dtype, m, ggufs[(m, dtype)], args)
    gguf = ggufs.get((m, dtype)) if dtype == "q8_0" else None
    r = run_contender(name, engine, backend, dtype, m, folder, args, cache_dir, gguf=gguf,
                      measure_compile=measure_compile)
    r["disk_GB"] = (gguf.stat().st_size if gguf else sum(f.stat().st_size for f in folder.glob("*.safetensors"))) / 1e9
    r["weight_bytes_per_token"] = weight_bytes_per_token(raw, dtype)
    if "decode_tok_s" in r:
        r["decode_bandwidth_bound_tok_s"] = bandwidth["GBps"] * 1e9 / r["weight_bytes_per_token"]
        r["decode_fraction_of_bound"] = r["decode_tok_s"] / r["decode_bandwidth_bound_tok_s"]
    return r


def wait_for_quiet(limit: float, tries: int, pause: float) -> list:
    """Other people's jobs share these cores: wait (a while) for the 1-minute load to drop below `limit`."""
    seen = []
    for _ in range(tries):
        seen.append(os.getloadavg()[0])
        if seen[-1] < limit:
            break
        print(f"load average {seen[-1]:.2f} >= {limit}: waiting {pause:.0f}s", flush=True)
        time.sleep(pause)
    return seen


def drift(a_path, b_path) -> dict:
    """How far the logits of contender a are from b's over the decoded positions (same fixed tokens)."""
    a, b = np.load(a_path), np.load(b_path)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return {"positions": n, "max_abs": float(np.abs(a - b).max()), "max_abs_logit": float(np.abs(b).max()),
            "rel_rms": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
            "top1_agree": float((a.argmax(1) == b.argmax(1)).mean())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="prompt 64, 16 new tokens, one prefill run")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prefill-runs", type=int, default=2)
    ap.add_argument("--reference-decode", type=int, default=8, help="tokens decoded by the slow numpy reference")
    ap.add_argument("--models", default="qwen3-0.6b,qwen3-30b-a3b-2l")
    ap.add_argument("--contenders", default=",".join(c[0] for c in CONTENDERS))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--wait", type=float, default=5, help="minutes to wait at most for a quiet machine")
    ap.add_argument("--omp-wait-policy", default="auto",
                    help="OMP_WAIT_POLICY for every contender: auto = PASSIVE if the machine is busy, else unset")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP"),
                    help="llama.cpp source tree with convert_hf_to_gguf.py and build/bin/llama-bench ($LLAMA_CPP)")
    ap.add_argument("--llama-reps", type=int, default=2, help="llama-bench -r")
    ap.add_argument("--warm", action="store_true",
                    help="keep the compiled kernels in benchmarks/out/numba-cache between runs (no compile figures)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the compared contenders (and the long-context ones), in turn; medians reported")
    ap.add_argument("--context", type=int, default=4096, help="long-context decode after this many tokens (0: none)")
    ap.add_argument("--context-new", type=int, default=64, help="tokens decoded after the long context")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.prompt, args.new, args.prefill_runs, args.context, args.context_new, args.rounds = 64, 16, 1, 256, 8, 2
    args.llama_bench = args.llama_cpp and args.llama_cpp / "build" / "bin" / "llama-bench"
    if args.llama_cpp and not (args.llama_bench.is_file() and (args.llama_cpp / "convert_hf_to_gguf.py").is_file()):
        ap.error(f"--llama-cpp {args.llama_cpp}: no build/bin/llama-bench or convert_hf_to_gguf.py there")
    if args.prompt <= WARMUP_TOKENS:
        ap.error(f"--prompt must be longer than the {WARMUP_TOKENS}-token warm-up prompt")

    started = time.time()
    OUT.mkdir(exist_ok=True)
    configs = model_configs()
    models = [m for m in args.models.split(",") if m]
    folders = {m: make_checkpoint(m, configs[m]) for m in models}
    ggufs = {(m, d): make_gguf(folders[m], d, args.llama_cpp) for m in models for d in GGUF_TYPES} \
        if args.llama_cpp else {}
    quiet = wait_for_quiet(limit=0.8, tries=max(1, int(args.wait * 2)), pause=30)
    if args.omp_wait_policy == "auto":
        # Numba's and torch's OpenMP threads spin while they wait for each other: best on idle cores, very
        # bad when another process holds one (the spinning thread burns the time the other one needs).
        args.omp_wait_policy = "" if quiet[-1] < 0.8 else "PASSIVE"
    print("measuring memory bandwidth ...", flush=True)
    bandwidth = measure_bandwidth()
    print(f"  {bandwidth['GBps']:.1f} GB/s on {THREADS} cores, {bandwidth['GBps_1_threads']:.1f} GB/s on one")

    results = []
    wanted = set(args.contenders.split(","))
    for m in models:
        print(f"{m}:", flush=True)
        # a cold cache, where the compile time is measured; --warm: one kept under benchmarks/out, no compile figure
        cache_dir = OUT / "numba-cache" if args.warm else Path(tempfile.mkdtemp(prefix="numba-cache-"))
        for rnd in range(args.rounds):
            runs = [(c, False) for c in CONTENDERS if c[0] in wanted and (rnd == 0 or c[0] in ROUNDS_OF)]
            if m == "qwen3-0.6b" and args.context:
                runs += [(c, True) for c in LONG_CONTEXT]
            print(f" round {rnd + 1} of {args.rounds}", flush=True)
            for (name, engine, backend, dtype), long in round_order(runs, rnd):
                r = run_one(name, engine, backend, dtype, m, folders[m], ggufs, args, cache_dir, configs[m],
                            bandwidth, long, measure_compile=rnd == 0 and not args.warm)
                if r is not None:
                    results.append({**r, "round": rnd})
        if not args.warm:
            shutil.rmtree(cache_dir, ignore_errors=True)
    bandwidth_after = measure_bandwidth(repeats=3)

    drifts = {}
    for m in models:
        by = {r["contender"]: r for r in results if r["model"] == m and "error" not in r}
        pairs = [("miniqwen3 bf16 fp32 products", "transformers fp32"),
                 ("miniqwen3 bf16 fp32 products", "miniqwen3 numpy bf16"),
                 ("miniqwen3 q8_0", "miniqwen3 bf16 fp32 products"),
                 ("miniqwen3 bf16", "transformers fp32"), ("miniqwen3 bf16", "transformers bf16"),
                 ("transformers bf16", "transformers fp32"),
                 ("miniqwen3 bf16, bf16 KV cache", "miniqwen3 bf16, fp32 KV cache"),
                 ("miniqwen3 bf16, q8_0 KV cache", "miniqwen3 bf16, fp32 KV cache")]
        for a, b in pairs:
            if a in by and b in by:
                drifts[f"{m}: {a} vs {b}"] = drift(by[a]["logits_path"], by[b]["logits_path"])

    report = {
        "command": " ".join([Path(sys.executable).name] + [str(Path(sys.argv[0]).relative_to(REPO)
                                                                 if Path(sys.argv[0]).is_absolute() else sys.argv[0])]
                            + sys.argv[1:]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "machine": machine_info(),
        "loadavg_waited": quiet, "loadavg_end": os.getloadavg(),
        "memory_bandwidth": bandwidth, "memory_bandwidth_after": bandwidth_after,
        "settings": {"prompt": args.prompt, "new": args.new, "prefill_runs": args.prefill_runs,
                     "reference_decode_tokens": args.reference_decode, "threads": THREADS,
                     "context": args.context, "context_new": args.context_new, "llama_reps": args.llama_reps,
                     "rounds": args.rounds,
                     "OMP_WAIT_POLICY": args.omp_wait_policy or "(unset)"},
        "llama_cpp": str(args.llama_cpp) if args.llama_cpp else None,
        "results": results, "logit_drift": drifts,
    }
    report["targets"] = targets(report)
    report["wrong"] = wrong_logits(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "engine.md").write_text(markdown(report))
    print(markdown(report))


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": THREADS,
            "numpy": np.__version__}
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in cpu.splitlines() if line.startswith("flags")).split())
        info["simd"] = sorted(f for f in flags if f in {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                                        "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni"})
        info["mem_GB"] = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                                  if line.startswith("MemTotal")).split()[1]) / 1e6
    except (OSError, StopIteration):
        pass
    return info


# --- ratios and targets --------------------------------------------------------------------------

def _runs(report, model, contender, key) -> dict:
    """{round: value} of one contender's figure."""
    return {r.get("round", 0): r[key] for r in report["results"]
            if r["model"] == model and r["contender"] == contender and r.get(key) is not None}


def _get(report, model, contender, key):
    """The median over the rounds of one contender's figure (None if it has none)."""
    values = list(_runs(report, model, contender, key).values())
    return float(np.median(values)) if values else None


def ratios(report, model, a, b, key) -> list:
    """a's figure over b's, in each round that measured both (the two ran minutes apart, not an hour)."""
    ra, rb = _runs(report, model, a, key), _runs(report, model, b, key)
    return [ra[k] / rb[k] for k in sorted(ra) if k in rb]


# A speed is worth nothing if the logits are wrong: miniqwen3's decoded logits must be transformers fp32's (and the
# NumPy reference's) to fp32 rounding. 48e4dc4 decoded every real Qwen3 shape wrongly (half of each value row) and
# its run's speeds were reported all the same; now such a run says so at the top of its tables.
CORRECT_REL_RMS = 1e-4


def wrong_logits(report) -> list:
    """The sanity pairs whose decoded logits are further apart than CORRECT_REL_RMS."""
    sanity = ("miniqwen3 bf16 fp32 products vs transformers fp32",
              "miniqwen3 bf16 fp32 products vs miniqwen3 numpy bf16")
    return [k for k, d in report["logit_drift"].items()
            if k.split(": ", 1)[1] in sanity and not d["rel_rms"] < CORRECT_REL_RMS]


def targets(report) -> list:
    """The issue's targets, each with the median of its per-round ratios, their range, and whether it is met."""
    rows = []

    def check(what, per_round, goal):
        if per_round:
            rows.append({"target": what, "measured": float(np.median(per_round)), "rounds": per_round,
                         "goal": goal, "met": None if goal is None else bool(np.median(per_round) >= goal)})

    for m, label in (("qwen3-0.6b", "0.6B"), ("qwen3-30b-a3b-2l", "30B-A3B layers")):
        for d, phase, goal in (("bf16", "decode", 0.85), ("q8_0", "decode", 0.7), ("bf16", "prefill", 0.7)):
            check(f"{label} {phase} {d}, x llama.cpp {d}",
                  ratios(report, m, f"miniqwen3 {d}", f"llama.cpp {d}", f"{phase}_tok_s"), goal)
        for phase in ("decode", "prefill"):   # matmul_precision="fp32" (transformers' fp32 logits): no goal
            check(f"{label} {phase} bf16 in fp32 products, x llama.cpp bf16",
                  ratios(report, m, "miniqwen3 bf16 fp32 products", "llama.cpp bf16", f"{phase}_tok_s"), None)
    # the smaller KV caches against the fp32 one. By bytes alone (1.19 GB of weights, 0.94 GB of fp32 cache at
    # 4096 tokens) bf16 could give at most 1.28x and q8_0 1.48x: the goal is q8_0's; bf16's row has none
    context = report["settings"].get("context")
    for kv, goal in (("q8_0", 1.3), ("bf16", None)):
        check(f"0.6B decode after {context} tokens, {kv} KV cache x fp32 KV cache",
              ratios(report, "qwen3-0.6b", f"miniqwen3 bf16, {kv} KV cache", "miniqwen3 bf16, fp32 KV cache",
                     "decode_tok_s"), goal)
    return rows


def summary(report) -> list:
    """One record per (model, contender), in the order first run: the first round's record with prefill and
    decode replaced by their medians over the rounds, and the number of rounds and the decode range added."""
    out = {}
    for r in report["results"]:
        key = (r["model"], r["contender"])
        if key in out or "error" in r and any(not ("error" in x) for x in report["results"]
                                               if (x["model"], x["contender"]) == key):
            continue
        rec = dict(r)
        for k in ("prefill_tok_s", "decode_tok_s"):
            runs = _runs(report, *key, k)
            if runs:
                rec[k], rec[k[:-6] + "_range"] = float(np.median(list(runs.values()))), (min(runs.values()),
                                                                                           max(runs.values()))
        rec["rounds"] = len(_runs(report, *key, "decode_tok_s"))
        if rec.get("decode_bandwidth_bound_tok_s"):
            rec["decode_fraction_of_bound"] = rec["decode_tok_s"] / rec["decode_bandwidth_bound_tok_s"]
        out[key] = rec
    return list(out.values())


def markdown(report) -> str:
    mc, st = report["machine"], report["settings"]
    bw = report["memory_bandwidth"]
    rounds = st.get("rounds", 1)
    lines = [
        "# Engine benchmark", "",
        *([f"**WRONG LOGITS: {'; '.join(report['wrong'])} differ by more than {CORRECT_REL_RMS:g} (relative rms, "
           f"table at the end): these speeds are not those of a correct engine.**", ""] if report.get("wrong") else []),
        f"`{report['command']}` on {report['date']}, {report['duration_s'] / 60:.1f} min.  ",
        f"Machine: {mc.get('cpu', '?')}, {mc['cores']} cores, {mc.get('mem_GB', 0):.0f} GB, "
        f"SIMD {', '.join(mc.get('simd', []))}; Python {mc['python']}, NumPy {mc['numpy']}, "
        f"Numba {mc.get('numba', '?')}.  ",
        f"Memory bandwidth (Numba prange sum over 1 GiB, same run): {bw['GBps']:.1f} GB/s on {mc['cores']} cores "
        f"({bw['GBps_1_threads']:.1f} on one; {report['memory_bandwidth_after']['GBps']:.1f} at the end).  ",
        f"Load average while waiting to start: {', '.join(f'{x:.2f}' for x in report['loadavg_waited'])}; "
        f"at the end {report['loadavg_end'][0]:.2f} (a 1-minute average: it includes the contenders run just before); "
        f"OMP_WAIT_POLICY {st['OMP_WAIT_POLICY']} for every contender.  ",
        f"Prompt {st['prompt']} tokens (prefill: best of {st['prefill_runs']}), then {st['new']} decoded tokens (the "
        f"numpy reference: {st['reference_decode_tokens']}). Random bf16 weights; every contender in its own process.  ",
        f"{rounds} rounds: {', '.join(sorted(ROUNDS_OF))} and the long-context contenders ran once a round, in turn "
        f"(each round starting with another contender; the pairs a target compares back to back, each of the two "
        f"first in every other round); the others once. Speeds are the median over the rounds, "
        f"(min-max) beside them; ratios are taken within a round, and their median reported.",
        "",
        "| model | contender | prefill tok/s | decode tok/s | weights read / token | decode / bandwidth bound "
        "| peak RSS GB (x disk) | load s | compile s | first call s | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(r, key, fmt):
        return fmt.format(r[key]) if r.get(key) is not None else "-"

    def speed(r, key, fmt):
        text = cell(r, key, fmt)
        spread = r.get(key[:-6] + "_range")
        if r.get("rounds", 1) > 1 and spread:
            text += f" ({fmt.format(spread[0])}-{fmt.format(spread[1])})"
        return text

    def used(r):
        """What miniqwen3.load picked: the backend, and the products when the default "auto" settled them."""
        picked = [r["backend_used"]] if "backend_used" in r else []
        if "matmul_precision_used" in r:
            picked.append(f"{r['matmul_precision_used']} products")
        return f" ({', '.join(picked)})" if picked else ""
    rows = summary(report)
    for r in rows:
        if r.get("context"):
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | {r['contender']} | failed | | | | | | | | |")
            continue
        if r["engine"] == "llama.cpp":
            lines.append(f"| {r['model']} | {r['contender']} | {speed(r, 'prefill_tok_s', '{:.1f}')} | "
                         f"{speed(r, 'decode_tok_s', '{:.2f}')} | | | | | | | {r['loadavg_before'][0]:.1f} |")
            continue
        lines.append(
            f"| {r['model']} | {r['contender']}{used(r)} | "
            f"{speed(r, 'prefill_tok_s', '{:.1f}')} | {speed(r, 'decode_tok_s', '{:.2f}')} | "
            f"{r['weight_bytes_per_token'] / 1e9:.2f} GB | {r['decode_fraction_of_bound']:.0%} of "
            f"{r['decode_bandwidth_bound_tok_s']:.1f} | {r['peak_rss_GB']:.2f} ({r['peak_rss_GB'] / r['disk_GB']:.2f}) | "
            f"{r['load_s']:.1f} | {cell(r, 'compile_s', '{:.1f}')} | {r['first_call_s']:.2f} | "
            f"{r['loadavg_before'][0]:.1f} |")
    lines += ["", "miniqwen3's contenders name the backend and the products `miniqwen3.load` picked (no backend argument "
              "but the numpy reference's; no matmul_precision but the fp32-products contender's: the default "
              "\"auto\" is bf16 products for bf16 weights on a CPU with AVX512-BF16, fp32 elsewhere). q8_0: the Q8_0 "
              "GGUF that llama.cpp's converter wrote from the same checkpoint, for both engines. llama.cpp: llama-bench, mean of its runs; its decode after the prompt (`-d PROMPT`), as ours. "
              "Weights read / token: the weight bytes one decoded token reads; the bound is bandwidth / those bytes. "
              "Compile (first round): load and first call in a process with an empty Numba cache, minus the same in "
              "the next process (which loads the kernels from that cache); q8_0: on top of bf16's cache. First call: "
              "a 24-token prompt and one token, in the process that measured everything else (kernels loaded from "
              "the cache). Peak RSS, load and first call: the first round's."]
    lines += ["", "## Ratios (within a round; median, and min-max over the rounds)", "",
              "| model | miniqwen3 vs | prefill | decode |", "|---|---|---:|---:|"]
    for model in dict.fromkeys(r["model"] for r in report["results"]):
        for mine, other in (("miniqwen3 bf16", "llama.cpp bf16"), ("miniqwen3 q8_0", "llama.cpp q8_0"),
                            ("miniqwen3 bf16 fp32 products", "llama.cpp bf16"),
                            ("miniqwen3 bf16", "miniqwen3 bf16 fp32 products"),
                            ("miniqwen3 bf16", "transformers bf16"), ("miniqwen3 bf16", "transformers fp32"),
                            ("miniqwen3 bf16", "miniqwen3 numpy bf16")):
            cells = []
            for phase in ("prefill_tok_s", "decode_tok_s"):
                per_round = ratios(report, model, mine, other, phase)
                cells.append("-" if not per_round else f"{np.median(per_round):.2f}x" + (
                    f" ({min(per_round):.2f}-{max(per_round):.2f})" if len(per_round) > 1 else ""))
            lines.append(f"| {model} | {mine} vs {other} | {cells[0]} | {cells[1]} |")
    long = [r for r in rows if r.get("context")]
    if long:
        lines += ["", f"## Decode after {st['context']} tokens of context (qwen3-0.6b, bf16 weights)",
                  "", "| contender | prefill of the context, tok/s | decode tok/s | peak RSS GB |", "|---|---:|---:|---:|"]
        for r in long:
            if "error" in r:
                lines.append(f"| {r['contender']} | failed | | |")
            else:
                lines.append(f"| {r['contender']} | {speed(r, 'prefill_tok_s', '{:.1f}')} | "
                             f"{speed(r, 'decode_tok_s', '{:.2f}')} | {cell(r, 'peak_rss_GB', '{:.2f}')} |")
        lines += ["", f"{st['context_new']} tokens decoded after the context (llama-bench: `-d "
                  f"{st['context']}`, which fills its f16 KV cache before timing).", ""]
    lines += ["## Targets", "", "| target | median ratio | per round | goal | met |", "|---|---:|---|---:|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['measured']:.2f} | {', '.join(f'{x:.2f}' for x in t['rounds'])} | "
                     f"{t['goal'] or '-'} | {'-' if t['met'] is None else 'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Logit drift (decoded positions, same fixed tokens)", "",
              "| pair | max abs diff | max abs logit | relative rms | top-1 agreement |", "|---|---:|---:|---:|---:|"]
    for k, d in report["logit_drift"].items():
        lines.append(f"| {k} | {d['max_abs']:.4g} | {d['max_abs_logit']:.4g} | {d['rel_rms']:.2e} | "
                     f"{d['top1_agree']:.0%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
