"""Seconds per training step of e5-small, full vocabulary vs trimmed, side by side.

    python benchmarks/e5_train_step.py [--steps 8] [--batch 16] [--length 64]

Token classification (7 labels), forward + backward + AdamW step, two threads. The two
models alternate step by step, so machine noise hits both alike; the ratio is the figure
to quote, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForTokenClassification, AutoTokenizer

from polyticket.data.synth import synth_ner
from polyticket.models.e5 import prepare_e5_small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()

    corpus = Path(tempfile.mkdtemp()) / "corpus.txt"
    sentences = [
        " ".join(t) for lang in ("en", "ru", "zh", "ar", "hi") for t, _ in synth_ner(lang, 80, 0)
    ]
    corpus.write_text("\n".join(sentences), encoding="utf-8")
    directories = {"full": prepare_e5_small(), "trimmed": prepare_e5_small(vocab_from=[corpus])}

    runs = {}
    for name, directory in directories.items():
        tokenizer = AutoTokenizer.from_pretrained(directory)
        batch = tokenizer(
            sentences[: args.batch],
            padding="max_length",
            truncation=True,
            max_length=args.length,
            return_tensors="pt",
        )
        batch["labels"] = torch.zeros_like(batch["input_ids"])
        model = AutoModelForTokenClassification.from_pretrained(directory, num_labels=7)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        runs[name] = (model, optimizer, batch)

    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.steps + 2):
        for name, (model, optimizer, batch) in runs.items():
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step >= 2:  # the first steps warm up allocators and kernels
                times[name].append(time.perf_counter() - start)

    for name, (model, _, _) in runs.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        median = statistics.median(times[name])
        print(f"{name:8} {params:6.1f}M parameters  median {median:.3f} s/step")
    ratio = statistics.median(times["full"]) / statistics.median(times["trimmed"])
    print(f"trimmed is {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
