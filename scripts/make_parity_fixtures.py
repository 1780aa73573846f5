"""Regenerate the golden parity fixtures: tiny random checkpoints built with transformers, and
transformers' logits and chosen experts on a fixed prompt.

    python scripts/make_parity_fixtures.py        # needs the oracle extra (torch, transformers)

Writes tests/fixtures/parity/<case>/ (config.json, safetensors) and <case>/expected.npz.
"""
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from parity_cases import CASES, build_checkpoint, prompt_ids, reference_outputs  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "parity"


def main():
    import transformers
    for name in CASES:
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        model = build_checkpoint(name, folder)
        for extra in ("generation_config.json",):
            (folder / extra).unlink(missing_ok=True)
        ids = prompt_ids(model.config.vocab_size)
        ref = reference_outputs(model, ids)
        np.savez_compressed(folder / "expected.npz", ids=ids, transformers_version=transformers.__version__, **ref)
        print(f"{name}: {sum(f.stat().st_size for f in folder.iterdir())} bytes")


if __name__ == "__main__":
    main()
