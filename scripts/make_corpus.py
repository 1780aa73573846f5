"""Write the tiny model's corpus (see miniqwen3/corpus.py for what is in it and how it is split).

    python scripts/make_corpus.py --out build/tiny/corpus --n 200000 --seed 0
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from miniqwen3.corpus import write_corpus  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/tiny/corpus")
    ap.add_argument("--n", type=int, default=200_000, help="training conversations")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.time()
    counts = write_corpus(args.out, n_train=args.n, seed=args.seed)
    print(f"corpus -> {args.out} in {time.time() - t:.0f}s: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
