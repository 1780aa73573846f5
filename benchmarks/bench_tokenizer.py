"""Encode throughput of miniqwen3's tokenizer vs HF `tokenizers` on the same mixed text, side by side.

The text (a few MB, built the same way on every run) has three parts:
  english  Python's own help pages (`pydoc_data.topics`), plain English prose
  code     Python standard-library modules, sorted by name (code, comments, docstrings)
  cjk      Chinese, Japanese and Korean: characters of a few real sentences, drawn at random into clauses
           with punctuation (seeded), so almost every word is new: the hard case for a word cache

Each part is encoded as one long string; "all in 4 KB chunks" encodes the whole text as ~4 KB pieces, one
call each, closer to how prompts arrive (HF is slow on a single multi-MB string). A last line gives HF's
multi-threaded `encode_batch` on those chunks for reference. "cold" is the first encode after a fresh load
(empty word cache), "warm" the best of a few repeats. Prints a table and writes benchmarks/out/tokenizer.json.

    python benchmarks/bench_tokenizer.py [--tokenizer DIR] [--mb 3]
"""
import argparse
import json
import os
import platform
import random
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from miniqwen3.tokenizer import Tokenizer  # noqa: E402

CJK_SEEDS = [
    "我们在学习如何从零开始实现一个大型语言模型，并且用真实的权重检查每一层的输出是否正确。",
    "通义千问是阿里巴巴开发的大语言模型系列，支持思考模式和非思考模式之间的切换。",
    "今日は天気がいいので、公園を散歩しながら新しい論文について考えました。",
    "トークナイザーは文字列を整数の列に変換し、モデルはその列から次の単語を予測します。",
    "안녕하세요. 오늘은 언어 모델의 토크나이저가 어떻게 동작하는지 알아보겠습니다.",
    "한국어 문장은 띄어쓰기가 있어서 단어 단위로 나누기가 비교적 쉽습니다.",
]
CJK_PUNCTUATION = ["，", "。", "、", "！", "？", "\n", " ", ". "]


def find_tokenizer_dir() -> Path:
    """$MINIQWEN3_QWEN3_TOKENIZER, else ../shared/qwen3-tokenizer beside the checkout."""
    env = os.environ.get("MINIQWEN3_QWEN3_TOKENIZER")
    folder = Path(env) if env else REPO.parent / "shared" / "qwen3-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        sys.exit(f"no tokenizer.json in {folder}; pass --tokenizer DIR or set MINIQWEN3_QWEN3_TOKENIZER")
    return folder


def english_text(n_chars: int) -> str:
    from pydoc_data.topics import topics
    text = "\n\n".join(topics[k] for k in sorted(topics))
    return (text * (n_chars // len(text) + 1))[:n_chars]


def code_text(n_chars: int) -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        parts.append(source)
        total += len(source)
        if total >= n_chars:
            break
    return "".join(parts)[:n_chars]


def cjk_text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    chars = sorted({c for s in CJK_SEEDS for c in s if c.isalpha()})
    out, total = [], 0
    while total < n_chars:
        clause = "".join(rng.choice(chars) for _ in range(rng.randint(3, 20))) + rng.choice(CJK_PUNCTUATION)
        out.append(clause)
        total += len(clause)
    return "".join(out)[:n_chars]


def build_corpus(megabytes: float) -> dict[str, str]:
    """Text parts sized so the UTF-8 total is about `megabytes` MB: 40% English, 40% code, 20% CJK by bytes."""
    total = int(megabytes * 1_000_000)
    return {
        "english": english_text(int(total * 0.4)),
        "code": code_text(int(total * 0.4)),
        "cjk": cjk_text(int(total * 0.2) // 3),
    }


def chunks(text: str, size: int = 4096) -> list[str]:
    """`text` cut into pieces of about `size` characters, each ending at a newline where there is one."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end == -1 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(name: str, load, encode, texts: dict[str, list[str]], repeats: int) -> dict:
    """Load time; per part (a list of strings, one encode call each), cold (fresh load, first pass) and
    warm (best of `repeats`) seconds, and the ids."""
    load_s, _ = timed(load)
    parts = {}
    for part, text in texts.items():
        tokenizer = load()
        cold_s, ids = timed(lambda: encode(tokenizer, text))
        warm_s = min(timed(lambda: encode(tokenizer, text))[0] for _ in range(repeats))
        parts[part] = {"cold_s": cold_s, "warm_s": warm_s, "ids": ids}
    return {"name": name, "load_s": load_s, "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json")
    parser.add_argument("--mb", type=float, default=3.0, help="size of the text in MB of UTF-8 (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats, best one counts (default 3)")
    args = parser.parse_args()
    folder = args.tokenizer or find_tokenizer_dir()

    import tokenizers

    corpus = build_corpus(args.mb)
    whole = "\n\n".join(corpus.values())
    texts = {part: [text] for part, text in corpus.items()}
    texts["all"] = [whole]
    texts["all in 4 KB chunks"] = chunks(whole)
    sizes = {part: sum(len(t.encode("utf-8")) for t in pieces) / 1e6 for part, pieces in texts.items()}

    def load_hf():
        return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))

    ours = measure("miniqwen3", lambda: Tokenizer.from_file(folder),
                   lambda t, pieces: [i for p in pieces for i in t.encode(p)], texts, args.repeats)
    hf = measure("hf tokenizers", load_hf,
                 lambda t, pieces: [i for p in pieces for i in t.encode(p, add_special_tokens=False).ids],
                 texts, args.repeats)
    batch_tokenizer = load_hf()
    batch_cold_s, _ = timed(lambda: batch_tokenizer.encode_batch(texts["all in 4 KB chunks"], add_special_tokens=False))
    batch_warm_s = min(timed(lambda: batch_tokenizer.encode_batch(texts["all in 4 KB chunks"], add_special_tokens=False))[0]
                       for _ in range(args.repeats))
    batch_mb = sizes["all in 4 KB chunks"]

    rows = []
    for part in texts:
        a, b = ours["parts"][part], hf["parts"][part]
        rows.append({
            "part": part, "mb": sizes[part], "tokens": len(b["ids"]), "ids_equal": a["ids"] == b["ids"],
            "ours_cold_mb_s": sizes[part] / a["cold_s"], "hf_cold_mb_s": sizes[part] / b["cold_s"],
            "ours_warm_mb_s": sizes[part] / a["warm_s"], "hf_warm_mb_s": sizes[part] / b["warm_s"],
        })

    print(f"load: miniqwen3 {ours['load_s']:.2f} s, hf tokenizers {hf['load_s']:.2f} s "
          f"(ours/hf {ours['load_s'] / hf['load_s']:.2f})\n")
    header = f"{'part':18} {'MB':>5} {'tokens':>8} {'same ids':>8} | {'cold MB/s ours':>14} {'hf':>6} {'ours/hf':>7} | " \
             f"{'warm MB/s ours':>14} {'hf':>6} {'ours/hf':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['part']:18} {r['mb']:5.2f} {r['tokens']:8d} {str(r['ids_equal']):>8} | "
              f"{r['ours_cold_mb_s']:14.2f} {r['hf_cold_mb_s']:6.2f} {r['ours_cold_mb_s'] / r['hf_cold_mb_s']:6.1f}x | "
              f"{r['ours_warm_mb_s']:14.2f} {r['hf_warm_mb_s']:6.2f} {r['ours_warm_mb_s'] / r['hf_warm_mb_s']:6.1f}x")

    print(f"\nhf encode_batch on the 4 KB chunks ({os.cpu_count()} CPUs): cold {batch_mb / batch_cold_s:.2f} MB/s, "
          f"warm {batch_mb / batch_warm_s:.2f} MB/s")

    out = REPO / "benchmarks" / "out" / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "tokenizer encode throughput",
        "tokenizer": str(folder),
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
        "tokenizers_version": tokenizers.__version__,
        "load_s": {"miniqwen3": ours["load_s"], "hf": hf["load_s"]},
        "rows": rows,
        "hf_encode_batch_4kb_chunks_mb_s": {"cold": batch_mb / batch_cold_s, "warm": batch_mb / batch_warm_s,
                                            "cpus": os.cpu_count()},
    }
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
