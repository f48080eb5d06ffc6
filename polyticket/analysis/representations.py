"""Sentence representations per layer, of the dense model and of each sub-network θ0 ⊙ m.

Shared by the representation analyses (``retrieve``, ``similarity``): they read parallel text
files and mask files, load the base model once, and get for each mask (dense first) the pooled
hidden states of every layer (the embedding output and each block) for the sentences of every
language. Nothing is trained: a mask is applied to the pre-trained weights θ0 in place and
θ0 is restored afterwards.

Public API: :func:`parse_parallel`, :func:`read_sentences`, :func:`read_parallel`,
:func:`find_masks`, :func:`load_encoder`, :func:`read_inputs` (an :class:`Inputs`),
:func:`load_mask`, :func:`applied`, :func:`encode`, :func:`mask_states` and
:func:`layer_table`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from polyticket.errors import UserError
from polyticket.layout import StudyLayout
from polyticket.masks import FORMAT, Mask, read_metadata
from polyticket.models.families import PruneScope, find_prunable

Pooling = Literal["mean", "cls"]
DENSE = "dense"  # the label of the unmasked model in every output


# --- inputs -------------------------------------------------------------------------------
def parse_parallel(entries: Sequence[str]) -> dict[str, Path]:
    """``["en=par.en.txt", "ru=par.ru.txt"]`` -> ``{"en": Path(...), "ru": Path(...)}``."""
    files: dict[str, Path] = {}
    for entry in entries:
        language, sep, path = entry.partition("=")
        if not sep or not language.strip() or not path.strip():
            raise UserError(f"--parallel: expected LANG=FILE, got {entry!r}")
        if language in files:
            raise UserError(f"--parallel: language {language!r} is given twice")
        files[language.strip()] = Path(path.strip())
    return files


def read_sentences(path: Path) -> list[str]:
    """One sentence per line; every line counts, since parallel files align by line number."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"parallel file not found: {path}") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({err.reason})") from None
    lines = text.removeprefix("\ufeff").splitlines()
    if not lines:
        raise UserError(f"{path}: empty file")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise UserError(f"{path}:{number}: empty line (parallel files align line by line)")
    return lines


def read_parallel(files: Mapping[str, Path]) -> dict[str, list[str]]:
    """Sentences per language, all with the same count (line i translates line i)."""
    texts = {language: read_sentences(path) for language, path in files.items()}
    first = next(iter(files))
    for language, path in files.items():
        if len(texts[language]) != len(texts[first]):
            raise UserError(
                f"parallel files differ in length: {files[first]} has "
                f"{len(texts[first])} lines, {path} has {len(texts[language])}"
            )
    if len(texts[first]) < 2:
        raise UserError(f"{files[first]}: needs at least 2 sentences, has {len(texts[first])}")
    return texts


def _is_mask(path: Path) -> bool:
    try:
        return read_metadata(path).get("format") == FORMAT
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def find_masks(paths: Sequence[Path]) -> dict[str, Path]:
    """Mask files by label, in a stable order.

    A file is taken as given (labelled by its stem). A directory stands for every polyticket
    mask below it, labelled by its path relative to the directory without the suffix; a study
    directory stands for the tickets it exports (``results/masks``) rather than every level of
    every cell.
    """
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.is_file():
            labelled = [(path.stem, path)]
        elif path.is_dir():
            exported = StudyLayout(path).exported_masks
            root = exported if exported.is_dir() else path
            masks = [p for p in sorted(root.rglob("*.safetensors")) if _is_mask(p)]
            if not masks:
                raise UserError(f"{path}: no polyticket mask (*.safetensors) below it")
            labelled = [(p.relative_to(root).with_suffix("").as_posix(), p) for p in masks]
        else:
            raise UserError(f"mask file or directory not found: {path}")
        for label, file in labelled:
            if label == DENSE or label in found:
                other = "the unmasked model" if label == DENSE else found[label]
                raise UserError(f"{file}: label {label!r} is already {other}'s")
            found[label] = file
    return found


# --- model ----------------------------------------------------------------------------------
def load_encoder(model: str, vocab_from: Sequence[Path] = ()):
    """The base model (no task head, eval mode) and its tokenizer."""
    from transformers import AutoModel

    from polyticket.config import ModelArgs
    from polyticket.models import load_model, load_tokenizer

    args = ModelArgs(model=model, vocab_from=list(vocab_from))
    encoder = load_model(AutoModel, args, seed=0).eval()
    return encoder, load_tokenizer(args)


@dataclass
class Inputs:
    """What an analysis reads: the sentences per language, the masks, the base model."""

    texts: dict[str, list[str]]
    masks: dict[str, Path]
    model: PreTrainedModel
    tokenizer: Any

    def states(
        self, pooling: Pooling = "mean", batch_size: int = 32
    ) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        return mask_states(self.model, self.tokenizer, self.masks, self.texts, pooling, batch_size)

    def describe(self) -> dict[str, Any]:
        """For the JSON output: which masks and how much text."""
        return {
            "masks": {label: str(path) for label, path in self.masks.items()},
            "languages": list(self.texts),
            "sentences": len(next(iter(self.texts.values()))),
        }


def read_inputs(
    model: str,
    masks: Sequence[Path] | Mapping[str, Path],
    parallel: Mapping[str, Path],
    scope: PruneScope | None = None,
) -> Inputs:
    """Every input checked before the model is loaded, so that a typo fails fast. ``masks``
    are files and folders (``find_masks``), or files already labelled; ``scope`` is what
    they should cover (a study's ``prune_*`` knobs)."""
    texts = read_parallel(parallel)
    mask_files = dict(masks) if isinstance(masks, Mapping) else find_masks(masks)
    # e5-small's vocabulary is trimmed to the pieces of these files (others are ignored).
    encoder, tokenizer = load_encoder(model, vocab_from=list(parallel.values()))
    prunable = find_prunable(encoder, scope or PruneScope()).params if mask_files else {}
    for path in mask_files.values():  # before minutes of encoding, not after
        mask = load_mask(encoder, path)
        mask.check_fits(_shapes(encoder), str(path))
        mask.check_covers(prunable, model, str(path))
    return Inputs(texts, mask_files, encoder, tokenizer)


def _shapes(model: PreTrainedModel) -> dict[str, torch.Size]:
    return {name: p.shape for name, p in model.named_parameters()}


def load_mask(model: PreTrainedModel, path: Path) -> Mask:
    """A polyticket mask, or an original-code .pt one matched to the model's parameter names."""
    from polyticket.compat import read_mask

    return read_mask(path, known_names=[name for name, _ in model.named_parameters()])


@contextlib.contextmanager
def applied(model: PreTrainedModel, mask: Mask, source: str = "mask") -> Iterator[None]:
    """θ0 ⊙ m inside the block, θ0 again after it (mask keys are base-model names)."""
    mask.check_fits(_shapes(model), source)
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in mask}
    try:
        with torch.no_grad():
            for name, keep in mask.items():
                params[name].mul_(keep.to(params[name].device, params[name].dtype))
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


@torch.no_grad()
def encode(
    model: PreTrainedModel,
    tokenizer,
    sentences: Sequence[str],
    pooling: Pooling = "mean",
    batch_size: int = 32,
    max_length: int = 128,
) -> torch.Tensor:
    """Pooled states, shape (layers, sentences, hidden): the embedding output, then each block.

    ``mean`` averages the real tokens (the attention mask leaves padding out); ``cls`` takes
    the first token. An encoder-decoder model is read through its encoder. Sentences are
    batched by length (and the states put back in their order), so that batches carry
    little padding: the states do not depend on the batching. Always in fp32, a study's
    cell as the commands: under bf16 autocast, SVCCA moved by up to 0.017 and retrieval by a
    sentence in 60 (measured), more than tickets differ by.
    """
    if pooling not in ("mean", "cls"):
        raise UserError(f"unknown pooling {pooling!r}: use mean or cls")
    model.eval()
    encoder = model.get_encoder() if model.config.is_encoder_decoder else model
    device = next(model.parameters()).device
    tokens = tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    pooled: list[torch.Tensor | None] = [None] * len(tokens)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [tokens[i] for i in chosen]}, return_tensors="pt").to(
            device
        )
        hidden = encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        ).hidden_states
        states = torch.stack(hidden).float()  # (layers, batch, tokens, hidden)
        if pooling == "cls":
            states = states[:, :, 0]
        else:
            weights = batch["attention_mask"].to(states.dtype)[None, :, :, None]
            states = (states * weights).sum(2) / weights.sum(2)
        for column, index in enumerate(chosen):
            pooled[index] = states[:, column]
    return torch.stack(pooled, dim=1).cpu()


def mask_states(
    model: PreTrainedModel,
    tokenizer,
    masks: Mapping[str, Path],
    texts: Mapping[str, Sequence[str]],
    pooling: Pooling = "mean",
    batch_size: int = 32,
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(label, {language: states}) for the dense model, then each mask.

    A generator, so that only one sub-network's states are held at a time besides what the
    caller keeps (a study has dozens of masks; each costs layers × sentences × hidden floats
    per language).
    """

    def encode_all() -> dict[str, torch.Tensor]:
        return {lang: encode(model, tokenizer, s, pooling, batch_size) for lang, s in texts.items()}

    yield DENSE, encode_all()
    for label, path in masks.items():
        with applied(model, load_mask(model, path), source=str(path)):
            states = encode_all()
        yield label, states


# --- output ---------------------------------------------------------------------------------
def layer_table(
    title: str, rows: Iterable[dict], keys: Sequence[str], cell: Callable[[dict], str]
) -> str:
    """One line per distinct ``keys`` of the rows, their cells layer after layer (width 5)."""
    lines: dict[tuple[str, ...], list[str]] = {}
    for row in rows:
        lines.setdefault(tuple(str(row[k]) for k in keys), []).append(cell(row))
    if not lines:
        return ""
    widths = [max(len(k), *(len(key[i]) for key in lines)) for i, k in enumerate(keys)]
    layers = max(len(cells) for cells in lines.values())

    def line(key: Sequence[str], cells: Iterable[str]) -> str:
        labels = "  ".join(f"{k:<{w}}" for k, w in zip(key, widths, strict=True))
        return f"{labels}  " + " ".join(f"{c:>5}" for c in cells)

    header = line(keys, (f"L{i}" for i in range(layers)))
    return "\n".join([title, header, *(line(key, cells) for key, cells in lines.items())])
