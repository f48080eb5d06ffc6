import logging
import re

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    DistilBertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MT5Config,
    MT5ForConditionalGeneration,
    OPTConfig,
    OPTForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    XLMRobertaConfig,
)
from transformers.pytorch_utils import Conv1D

from polyticket.errors import UserError
from polyticket.models.families import FAMILIES, PruneScope, find_prunable

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    vocab_size=100,
    max_position_embeddings=64,
)


def expected(template: str, layers: int, parts: list[str]) -> set[str]:
    return {template.format(i=i, part=part) for i in range(layers) for part in parts}


BERT_PARTS = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


@pytest.mark.parametrize("config", [BertConfig(**SMALL), XLMRobertaConfig(**SMALL)])
def test_bert_and_xlmr_prune_the_six_block_matrices_and_not_the_rest(config):
    model = AutoModelForTokenClassification.from_config(config)
    found = find_prunable(model)
    assert set(found.params) == expected("encoder.layer.{i}.{part}.weight", 2, BERT_PARTS)
    assert set(found.groups.values()) == {"all"}


def test_pooler_only_when_asked_and_names_have_no_head_prefix():
    model = AutoModelForSequenceClassification.from_config(BertConfig(**SMALL))
    assert "pooler.dense.weight" not in find_prunable(model).params
    with_pooler = find_prunable(model, PruneScope(prune_pooler=True))
    assert "pooler.dense.weight" in with_pooler.params
    assert len(with_pooler.params) == 13
    assert not any(name.startswith(("bert.", "classifier")) for name in with_pooler.params)


def test_distilbert():
    config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100)
    found = find_prunable(AutoModelForTokenClassification.from_config(config))
    parts = [
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    ]
    assert set(found.params) == expected("transformer.layer.{i}.{part}.weight", 2, parts)


@pytest.mark.parametrize(
    "cls,config_cls,ff",
    [
        (T5ForConditionalGeneration, T5Config, ["wi", "wo"]),
        (MT5ForConditionalGeneration, MT5Config, ["wi_0", "wi_1", "wo"]),
    ],
)
def test_t5_encoder_and_decoder_are_separate_groups_with_cross_attention(cls, config_cls, ff):
    config = config_cls(
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        vocab_size=100,
        feed_forward_proj="gated-gelu" if "wi_0" in ff else "relu",
    )
    found = find_prunable(cls(config))
    attn = ["q", "k", "v", "o"]
    enc = expected("encoder.block.{i}.layer.0.SelfAttention.{part}.weight", 2, attn)
    enc |= expected("encoder.block.{i}.layer.1.DenseReluDense.{part}.weight", 2, ff)
    dec = expected("decoder.block.{i}.layer.0.SelfAttention.{part}.weight", 2, attn)
    dec |= expected("decoder.block.{i}.layer.1.EncDecAttention.{part}.weight", 2, attn)
    dec |= expected("decoder.block.{i}.layer.2.DenseReluDense.{part}.weight", 2, ff)
    assert set(found.params) == enc | dec
    assert {n for n, g in found.groups.items() if g == "encoder"} == enc
    assert {n for n, g in found.groups.items() if g == "decoder"} == dec


def test_gpt2_conv1d():
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    found = find_prunable(GPT2LMHeadModel(config))
    parts = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert set(found.params) == expected("h.{i}.{part}.weight", 2, parts)
    # Conv1D stores (in, out): its input features are axis 0, which scope row ranks along
    assert found.input_axes == {name: 0 for name in found.params}


def test_llama():
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=100,
    )
    found = find_prunable(LlamaForCausalLM(config))
    parts = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    assert set(found.params) == expected("layers.{i}.{part}.weight", 2, parts)


TINY_ANY = dict(  # the size knobs of every declared family, each config reads its own
    **SMALL,
    num_key_value_heads=2,
    head_dim=16,
    n_embd=32, n_layer=2, n_head=2, n_positions=64,  # GPT-2
    d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,  # T5
    dim=32, hidden_dim=64, n_heads=2, n_layers=2,  # DistilBERT
    pad_token_id=0, bos_token_id=0, eos_token_id=0,
)  # fmt: skip


@pytest.mark.parametrize("model_type", [t for f in FAMILIES for t in f.model_types])
def test_each_declared_family_prunes_every_matrix_of_its_blocks(model_type, caplog):
    """Phi-3 fuses q/k/v and gate/up: under Llama's names it lost half its matrices."""
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY_ANY))
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        found = find_prunable(model)
    # every linear layer of a numbered block (``layer.3.``, ``h.0.``, ``block.1.``)
    linear = (torch.nn.Linear, Conv1D)
    blocks = {f"{name}.weight" for name, module in model.named_modules()
              if isinstance(module, linear) and re.search(r"\.\d+\.", name)}  # fmt: skip
    assert set(found.params) == blocks and "stay dense" not in caplog.text


def test_phi3_prunes_its_fused_matrices():
    """Named, not only compared with the blocks' Linear layers (the warning's own rule)."""
    model = AutoModel.from_config(AutoConfig.for_model("phi3", **TINY_ANY))
    parts = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]
    assert set(find_prunable(model).params) == expected("layers.{i}.{part}.weight", 2, parts)


def test_block_matrices_a_family_misses_are_said(monkeypatch, caplog):
    import polyticket.models.families as families

    llama = families.family_of("llama")
    monkeypatch.setattr(families, "family_of", lambda model_type: llama)
    model = AutoModel.from_config(AutoConfig.for_model("phi3", **TINY_ANY))
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        find_prunable(model)
    assert "4 weight matrices in phi3's blocks are not in its family's prunable set" in (
        caplog.text
    )


def test_unknown_family_falls_back_to_block_linears_with_a_warning(caplog):
    config = OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        vocab_size=100,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
    )
    with caplog.at_level(logging.WARNING):
        found = find_prunable(OPTForCausalLM(config))
    assert "no declared prunable set" in caplog.text
    parts = [
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.q_proj",
        "self_attn.out_proj",
        "fc1",
        "fc2",
    ]
    assert set(found.params) == expected("decoder.layers.{i}.{part}.weight", 2, parts)


def test_include_and_exclude_override_the_defaults():
    model = AutoModelForTokenClassification.from_config(BertConfig(**SMALL))
    only_query = find_prunable(model, PruneScope(include=[r".*\.query\.weight"]))
    assert set(only_query.params) == {
        f"encoder.layer.{i}.attention.self.query.weight" for i in (0, 1)
    }
    no_ffn = find_prunable(
        model, PruneScope(exclude=[r"encoder\.layer\.\d+\.(intermediate|output)\.dense\.weight"])
    )
    assert len(no_ffn.params) == 8
    assert not any(re.search("intermediate", n) for n in no_ffn.params)
    with pytest.raises(UserError, match="invalid prune pattern"):
        find_prunable(model, PruneScope(include=["("]))


def test_prunable_params_are_the_live_parameters():
    model = AutoModelForTokenClassification.from_config(BertConfig(**SMALL))
    found = find_prunable(model)
    name = "encoder.layer.0.attention.self.query.weight"
    assert found.params[name] is model.bert.encoder.layer[0].attention.self.query.weight
    with torch.no_grad():
        found.params[name].zero_()
    assert model.bert.encoder.layer[0].attention.self.query.weight.abs().sum() == 0
