"""Train the tiny model's tokenizer: a byte-level BPE with Qwen3's normalizer, pre-tokenizer, decoder and added
tokens, written as tokenizer.json + tokenizer_config.json (with Qwen3's chat template) so that it loads through
the same code paths as a real Qwen3 tokenizer.

    python scripts/train_tokenizer.py --corpus build/tiny/corpus --out build/tiny/tokenizer --vocab 4000

Structure, as in Qwen3's tokenizer.json: NFC normalizer; pre-tokenizer = Split on Qwen's regex (isolated), then
ByteLevel(add_prefix_space=False, use_regex=False); ByteLevel post-processor and decoder; BPE without unk,
dropout or prefixes. The BPE vocabulary (all 256 byte symbols, then merges) takes ids 0..N-1; Qwen's 26 added
tokens follow at N..N+25 with the same contents and `special` flags as in Qwen3's tokenizer_config.json.
Needs the `tokenizers` library (a build tool here; miniqwen3 reads the result with its own code).
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parent.parent
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")


def qwen3_tokenizer_config(explicit=None) -> Path:
    """Qwen3's tokenizer_config.json (source of the added tokens and the chat template): --qwen3-config, else
    $MINIQWEN3_QWEN3_TOKENIZER, ../shared/qwen3-tokenizer beside the checkout, else the shipped tiny model's copy."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("MINIQWEN3_QWEN3_TOKENIZER"):
        candidates.append(Path(os.environ["MINIQWEN3_QWEN3_TOKENIZER"]) / "tokenizer_config.json")
    candidates += [REPO.parent / "shared" / "qwen3-tokenizer" / "tokenizer_config.json",
                   REPO / "miniqwen3" / "data" / "tiny" / "tokenizer_config.json"]
    for path in candidates:
        if path.is_file():
            return path
    sys.exit("no Qwen3 tokenizer_config.json found (pass --qwen3-config)")


def read_added_tokens(config: dict) -> list[dict]:
    """Qwen's added tokens in id order: [{content, special, ...}] (26 of them)."""
    decoder = config["added_tokens_decoder"]
    return [decoder[k] for k in sorted(decoder, key=int)]


def training_pieces(path: Path, added: list[str]):
    """The corpus text cut at the added tokens (they are matched before BPE, so BPE never sees them)."""
    cut = re.compile("|".join(re.escape(a) for a in added))
    with open(path, encoding="utf-8") as f:
        buf = []
        for line in f:
            buf.append(line)
            if len(buf) >= 64:
                yield from (p for p in cut.split("".join(buf)) if p)
                buf = []
        if buf:
            yield from (p for p in cut.split("".join(buf)) if p)


def build(corpus: Path, vocab_size: int, added: list[dict]) -> Tokenizer:
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_pieces(corpus, [a["content"] for a in added]), trainer)
    n = tok.get_vocab_size(with_added_tokens=False)
    tok.add_tokens([AddedToken(a["content"], single_word=a["single_word"], lstrip=a["lstrip"], rstrip=a["rstrip"],
                               normalized=a["normalized"], special=a["special"]) for a in added])
    for k, a in enumerate(added):
        assert tok.token_to_id(a["content"]) == n + k, (a["content"], tok.token_to_id(a["content"]), n + k)
    return tok


def tokenizer_config(qwen: dict, tok: Tokenizer, model_max_length: int) -> dict:
    """Qwen3's tokenizer_config.json with the added-token ids of this vocabulary."""
    decoder = {str(tok.token_to_id(a["content"])): a for a in read_added_tokens(qwen)}
    out = {k: v for k, v in qwen.items() if k not in ("added_tokens_decoder", "chat_template")}
    out["added_tokens_decoder"] = decoder
    out["model_max_length"] = model_max_length
    out["chat_template"] = qwen["chat_template"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="build/tiny/corpus", help="folder with tokenizer_text.txt (make_corpus.py)")
    ap.add_argument("--out", default="build/tiny/tokenizer")
    ap.add_argument("--vocab", type=int, default=4000,
                    help="BPE vocabulary size, bytes and merges (the added tokens come on top)")
    ap.add_argument("--model-max-length", type=int, default=2048)
    ap.add_argument("--qwen3-config", default=None, help="Qwen3's tokenizer_config.json (added tokens, chat template)")
    args = ap.parse_args(argv)
    qwen_path = qwen3_tokenizer_config(args.qwen3_config)
    qwen = json.loads(qwen_path.read_text(encoding="utf-8"))
    added = read_added_tokens(qwen)
    if len(added) != 26 or added[-1]["content"] != "</think>":
        sys.exit(f"{qwen_path}: expected Qwen3's 26 added tokens ending with </think>")
    tok = build(Path(args.corpus) / "tokenizer_text.txt", args.vocab, added)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    # The Python binding writes the ByteLevel decoder with its default flags whatever it is given, and null for
    # the empty BPE prefixes; neither changes encoding or decoding, but the file should read as Qwen3's does.
    data = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    data["decoder"] = dict(BYTE_LEVEL)
    data["model"].update(continuing_subword_prefix="", end_of_word_suffix="")   # Qwen3 writes "", the binding null
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(qwen, tok, args.model_max_length), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")
    n = tok.get_vocab_size(with_added_tokens=False)
    print(f"tokenizer: {n} BPE tokens + {len(added)} added = {tok.get_vocab_size()} ids -> {out}"
          f" (template and added tokens from {qwen_path})")


if __name__ == "__main__":
    main()
