"""The routing picture of notebook 02 (expert share by domain, per MoE layer) for any model, as a PNG: the same
texts and functions as the notebook's section 3 (`routing.routing_by_group`, `viz.group_share_figure`).

    python scripts/routing_figure.py MODEL OUT.png [--layers 0 16 32 47]

Made for the README's picture of the full-size Qwen3-30B-A3B (run from a GGUF file), whose notebook run headless
sits in the nbclient stall of issue 13. A model over 1B parameters gets the notebook's short texts.
"""
import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import miniqwen3  # noqa: E402
from miniqwen3 import corpus, routing, viz  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, nargs="*")
    args = ap.parse_args()
    model = miniqwen3.load(args.model)
    c, tok = model.config, model.tokenizer
    big = c.parameter_counts()["total"] > 1e9
    max_tokens, per_language, per_domain = (48, 2, 2) if big else (128, 3, 5)
    rng = random.Random(0)

    def encode(text):
        return np.array(tok.encode(text)[:max_tokens])
    languages = {lang: [encode(corpus.conversation_text(corpus.sample_conversation(rng, held_out=True, lang=lang)))
                        for _ in range(per_language)] for lang in corpus.LANGUAGES}
    domains = {"arithmetic": [s for seqs in languages.values() for s in seqs[:1]],
               "prose": [encode(body[:2000]) for _, body in corpus.prose_documents(held_out=True)[:per_domain]],
               "code": [encode(body[:2000]) for _, body in corpus.code_documents(held_out=True)[:per_domain]]}
    by_domain = routing.routing_by_group(model, domains)
    shares, baseline = by_domain.shares(), by_domain.shuffled_shares()
    for i in by_domain.layers:
        print(f"layer {i}: domain-expert information {routing.specialisation(shares[i]):.3f} bits "
              f"(texts dealt to domains at random: {routing.specialisation(baseline[i]):.3f})")
    fig = viz.group_share_figure(shares, by_domain.names, args.layers or by_domain.layers)
    fig.suptitle(f"{Path(args.model).name}: share of each domain's routing slots per expert", fontsize=10)
    fig.savefig(args.out, dpi=90, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
