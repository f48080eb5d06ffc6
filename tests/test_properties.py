"""Property-based: on any bytes, and on well-formed documents of the wrong shape, the
readers and the mask loader either return a result or raise ``UserError``: nothing else."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyticket.compat import read_mask
from polyticket.config import read_config_file
from polyticket.errors import UserError
from polyticket.tasks.labels import WIKIANN_LABELS
from polyticket.tasks.mlm import read_documents
from polyticket.tasks.ner import read_conll, read_jsonl
from polyticket.tasks.nli import read_pairs

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READERS = {
    "data.conll": read_conll,
    "data.jsonl": lambda p: read_jsonl(p, WIKIANN_LABELS),
    "pairs.tsv": read_pairs,
    "pairs.jsonl": read_pairs,
    "text.txt": read_documents,
    "text.jsonl": read_documents,
    "config.yaml": read_config_file,
    "config.json": read_config_file,
    "mask.safetensors": read_mask,
    "mask.pt": read_mask,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# documents with the right keys and values of any type
records = st.fixed_dictionaries(
    {},
    optional={
        key: json_values for key in ("tokens", "ner_tags", "premise", "hypothesis", "label", "text")
    },
)


def _outcome(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            READERS[name](path)
        except UserError:
            pass


@pytest.mark.parametrize("name", sorted(READERS))
@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_are_parsed_or_a_user_error(name, data):
    _outcome(name, data)


@pytest.mark.parametrize("name", ["data.jsonl", "pairs.jsonl", "text.jsonl"])
@SETTINGS
@given(lines=st.lists(records | json_values, min_size=1, max_size=4))
def test_json_lines_of_the_wrong_shape_are_a_user_error(name, lines):
    text = "\n".join(json.dumps(line) for line in lines)
    _outcome(name, text.encode())


@pytest.mark.parametrize("name", ["config.yaml", "config.json"])
@SETTINGS
@given(value=json_values)
def test_config_documents_of_any_shape(name, value):
    _outcome(name, json.dumps(value).encode())


@SETTINGS
@given(
    metadata=st.dictionaries(
        st.sampled_from(["format", "shapes", "sparsity", "x"]),
        st.sampled_from(["polyticket-mask/1", "{}", '{"w": [8]}', '{"w": [3, 3]}', "[]", "x"])
        | st.text(max_size=12),
    ),
    tensors=st.dictionaries(
        st.sampled_from(["w", "v"]),
        st.tuples(st.sampled_from(["U8", "F32", "I64"]), st.lists(st.integers(0, 9), max_size=2)),
        max_size=2,
    ),
    payload=st.binary(max_size=16),
)
def test_safetensors_with_hostile_metadata_are_a_user_error(metadata, tensors, payload):
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = len(payload) // max(1, len(tensors))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    _outcome("mask.safetensors", struct.pack("<Q", len(raw)) + raw + payload)
