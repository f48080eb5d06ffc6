"""Tokens per second: dynamic padding against padding every batch to 128, side by side.

    python benchmarks/padding.py [--batches 4] [--smoke]

Sentence lengths like WikiANN's, synthesised: words per sentence log-normal with a median
of 10 and a long tail (about 1 in 100 over 40 words), 1.4 word pieces per word plus [CLS]
and [SEP], cut at 128. Batches of 8 drawn at random (as training shuffles), BERT-base
shape; the two paddings alternate batch by batch, each first every other batch. Two rows:
whole steps (forward, backward, AdamW) and forward + backward alone (the AdamW update costs
the same at any length, and weighs more the shorter the batch). Only real (not padding)
tokens count: the ratios of tokens per second are the figures. ``median_word_pieces`` is
the median sentence length in word pieces ([CLS] and [SEP] included), not words.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from train_step import build, rotated

MAX_LENGTH = 128


def sentence_lengths(count: int, seed: int = 0) -> np.ndarray:
    """Word pieces per sentence, [CLS] and [SEP] included."""
    rng = np.random.default_rng(seed)
    words = np.maximum(1, np.round(rng.lognormal(mean=np.log(10), sigma=0.6, size=count)))
    return np.minimum(MAX_LENGTH, np.round(words * 1.4).astype(int) + 2)


def padded(lengths: np.ndarray, width: int, vocab: int) -> dict[str, torch.Tensor]:
    """A batch of sentences of ``lengths`` padded to ``width``."""
    positions = torch.arange(width)[None, :]
    attention = (positions < torch.as_tensor(lengths)[:, None]).long()
    ids = torch.randint(5, vocab, (len(lengths), width)) * attention
    labels = torch.where(attention.bool(), torch.randint(0, 7, ids.shape), -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def rows(smoke: bool = False, batches: int = 4, size: int = 8) -> list[dict]:
    """Two rows: whole training steps, and forward + backward alone (the part padding
    changes; the AdamW update costs the same at any length)."""
    torch.set_num_threads(2)
    shape = "smoke" if smoke else "bert-base"
    vocab = 500 if smoke else 30522
    model, optimizer, _ = build(shape, "dense", "cpu")
    lengths = sentence_lengths((batches + 1) * size)
    tokens = {"dynamic": 0, "fixed": 0}
    seconds = {(way, part): 0.0 for way in tokens for part in ("step", "passes")}
    for index in range(batches + 1):  # the first batch warms up
        chosen = lengths[index * size : (index + 1) * size]
        widths = {"dynamic": int(chosen.max()), "fixed": MAX_LENGTH}
        for way in rotated(list(widths), index):  # neither always first
            width = widths[way]
            inputs = padded(chosen, width, vocab)
            start = time.perf_counter()
            model(**inputs).loss.backward()
            passes = time.perf_counter() - start
            optimizer.step()
            optimizer.zero_grad()
            if index:
                seconds[way, "passes"] += passes
                seconds[way, "step"] += time.perf_counter() - start
                tokens[way] += int(chosen.sum())
    found = []
    for part, what in (("step", "training steps"), ("passes", "forward + backward")):
        speed = {way: tokens[way] / seconds[way, part] for way in tokens}
        found.append(
            {
                "benchmark": "padding",
                "row": f"tokens/s dynamic / padded to {MAX_LENGTH}, {what}, {shape} batch {size}",
                "ratio": speed["dynamic"] / speed["fixed"],
                "goal": ">= 2",
                # word pieces ([CLS] and [SEP] included), not words
                "median_word_pieces": float(statistics.median(lengths.tolist())),
                "dynamic_tokens_per_second": speed["dynamic"],
            }
        )
    return found


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    args = parser.parse_args(argv)
    found = rows(args.smoke, 1 if args.smoke else args.batches)
    for row in found:
        print(row)
    return found


if __name__ == "__main__":
    main()
