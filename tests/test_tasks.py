"""Every task of the paper through the CLI: NLI (encoder and mT5), MLM, control masks,
cross-task masks, several languages, the original code's configs and masks."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CHILD_ENV, ner_sentences, write_conll

from polyticket.cli import main
from polyticket.config import DataArgs, ModelArgs, TrainArgs
from polyticket.errors import UserError
from polyticket.masks import Mask
from polyticket.models import load_tokenizer
from polyticket.models.families import find_prunable
from polyticket.tasks.base import equal_shares
from polyticket.tasks.mlm import MlmTask, blocks
from polyticket.tasks.ner import NerTask
from polyticket.tasks.nli import NliTask, NliTextTask
from polyticket.training import eval_loader, make_accelerator

FAST = ["--max-steps", "6", "--batch-size", "8", "--learning-rate", "1e-3", "--eval-steps", "3"]


def files(train, dev):
    return ["--train-file", str(train), "--eval-file", str(dev)]


def read(path: Path):
    return json.loads(path.read_text())


def test_nli_encoder_find_and_train(xlmr_dir, nli_files, tmp_path):
    run = tmp_path / "nli"
    args = ["--task", "nli", "--model", str(xlmr_dir), *files(*nli_files), *FAST]
    assert (
        main(["find", *args, "--rate", "0.5", "--target-sparsity", "0.5", "--out", str(run)]) == 0
    )
    level = read(run / "level_01" / "metrics.json")
    assert level["metric"] == "accuracy" and 0 <= level["best_score"] <= 1
    assert (
        main(
            [
                "train",
                *args,
                "--mask",
                str(run / "ticket.safetensors"),
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def mt5_run(tmp_path_factory, mt5_dir, nli_files):
    run = tmp_path_factory.mktemp("mt5") / "run"
    args = [
        "find",
        "--task",
        "nli",
        "--model",
        str(mt5_dir),
        *files(*nli_files),
        *FAST,
        "--rate",
        "0.25",
        "--target-sparsity",
        "0.5",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    return run


def test_mt5_encoder_and_decoder_each_end_at_the_target_sparsity(mt5_run):
    mask = Mask.load(mt5_run / "level_02" / "mask.safetensors")
    for group in ("encoder", "decoder"):
        part = mask.subset([n for n in mask if n.startswith(group + ".")])
        assert part.sparsity() == pytest.approx(0.5, abs=1e-3), group
    assert any(".EncDecAttention." in n for n in mask)
    assert read(mt5_run / "level_00" / "metrics.json")["metric"] == "accuracy"


def test_mt5_train_with_its_ticket(mt5_run, mt5_dir, nli_files, tmp_path):
    assert (
        main(
            [
                "train",
                "--task",
                "nli",
                "--model",
                str(mt5_dir),
                *files(*nli_files),
                *FAST,
                "--mask",
                str(mt5_run / "ticket.safetensors"),
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )


def test_mt5_inputs_cut_the_premise_not_the_hypothesis(mt5_dir, nli_files):
    """As one string, "xnli premise: P hypothesis: H" would lose H behind a long P."""
    from polyticket.tasks.nli import read_pairs

    tokenizer = load_tokenizer(ModelArgs(model=str(mt5_dir)))
    pairs = read_pairs(nli_files[1])

    def inputs(length: int) -> list[list[int]]:
        args = DataArgs(task="nli", max_seq_length=length)
        return [
            f["input_ids"] for f in NliTextTask().featurize(pairs, pairs, args, tokenizer, 0).eval
        ]

    joined = tokenizer([f"xnli premise: {p} hypothesis: {h}" for p, h, _ in pairs])["input_ids"]
    assert inputs(512) == joined  # nothing cut: the same as one string
    hypotheses = tokenizer([f" hypothesis: {h}" for _, h, _ in pairs])["input_ids"]
    room = [len(h) < 24 < len(j) for h, j in zip(hypotheses, joined, strict=True)]
    assert any(room)  # some premises must give way to their hypothesis
    for ids, hypothesis, whole in zip(inputs(24), hypotheses, joined, strict=True):
        if len(whole) <= 24:
            assert ids == whole
        elif len(hypothesis) < 24:
            assert len(ids) == 24 and ids[-len(hypothesis) :] == hypothesis
        else:  # a hypothesis longer than everything: its own start and </s>
            assert ids == hypothesis[:23] + hypothesis[-1:]


def test_mt5_answers_that_are_no_label_score_zero(mt5_dir, nli_files, monkeypatch):
    model_args = ModelArgs(model=str(mt5_dir))
    tokenizer = load_tokenizer(model_args)
    task = NliTextTask()
    data = task.prepare(
        DataArgs(task="nli", train_file=nli_files[0], eval_file=nli_files[1]), tokenizer, 0
    )
    model = task.build_model(model_args, data, 0)
    nonsense = tokenizer("maybe", return_tensors="pt")["input_ids"]

    def always_maybe(input_ids, **kwargs):
        return nonsense.repeat(input_ids.shape[0], 1)

    monkeypatch.setattr(model, "generate", always_maybe)
    accelerator = make_accelerator(TrainArgs(cpu=True))
    loader = eval_loader(data.eval, data.collator, 8)
    assert task.evaluate(model, loader, accelerator, data)["accuracy"] == 0.0
    # and the exact label words score 1
    gold = {i: ex["labels"] for i, ex in enumerate(data.eval)}
    calls = iter(range(0, len(data.eval), 8))

    def oracle(input_ids, **kwargs):
        start = next(calls)
        rows = [gold[start + i] for i in range(input_ids.shape[0])]
        width = max(map(len, rows))
        return torch.tensor([[0] + r + [0] * (width - len(r)) for r in rows])

    monkeypatch.setattr(model, "generate", oracle)
    assert task.evaluate(model, loader, accelerator, data)["accuracy"] == 1.0


@pytest.mark.parametrize("kind", ["ner", "nli", "nli-t5"])
def test_the_evaluation_loss_is_a_mean_over_labels_not_batches(
    kind, bert_dir, mt5_dir, conll_files, nli_files
):
    """With uneven batches the last, small one counted as much as a full one: the loss
    moved with --eval-batch-size. One batch of everything gives the model's own mean."""
    task = {"ner": NerTask(), "nli": NliTask(), "nli-t5": NliTextTask()}[kind]
    model_args = ModelArgs(model=str(mt5_dir if kind == "nli-t5" else bert_dir))
    files = conll_files if kind == "ner" else nli_files
    data_args = DataArgs(task=task.name, train_file=files[0], eval_file=files[1])
    data = task.prepare(data_args, load_tokenizer(model_args), 0)
    model = task.build_model(model_args, data, 0).eval()
    if kind == "nli-t5":  # only the loss is compared here: skip the answers' decoding
        model.generate = lambda input_ids, **kwargs: input_ids[:, :1]
    accelerator = make_accelerator(TrainArgs(cpu=True))
    everything = eval_loader(data.eval, data.collator, len(data.eval))
    with torch.no_grad():
        whole = model(**next(iter(everything))).loss.item()
    for size in (1, 7, len(data.eval)):  # 7: a last, smaller batch in every data set
        loader = eval_loader(data.eval, data.collator, size)
        loss = task.evaluate(model, loader, accelerator, data)["loss"]
        assert loss == pytest.approx(whole, rel=1e-5), size


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from polyticket.data.synth import write_synth

    return write_synth("text", "en", 40, 0, tmp_path_factory.mktemp("text") / "en.txt")


def test_mlm_blocks_keep_every_token_of_a_long_document(bert_dir):
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    document = " ".join(" ".join(t) for t, _ in ner_sentences(30, 4))
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    cut = blocks([document], tokenizer, 32)
    assert len(ids) > 3 * 30 and len(cut) >= 4
    assert all(len(b["input_ids"]) <= 32 for b in cut)
    inner = [i for b in cut for i in b["input_ids"][1:-1]]
    assert inner == ids
    assert all(b["attention_mask"] == [1] * len(b["input_ids"]) for b in cut)


def test_mlm_validation_split_is_by_document_and_perplexity_is_repeatable(bert_dir, text_file):
    task = MlmTask()
    data_args = DataArgs(task="mlm", train_file=text_file, validation_ratio=0.25, block_size=32)
    train_docs = task.read(data_args, "train", "en", 7)
    eval_docs = task.read(data_args, "eval", "en", 7)
    everything = text_file.read_text().splitlines()
    assert not set(train_docs) & set(eval_docs)
    assert sorted(train_docs + eval_docs) == sorted(everything)
    assert len(eval_docs) == 10

    model_args = ModelArgs(model=str(bert_dir))
    data = task.prepare(data_args, load_tokenizer(model_args), 7)
    model = task.build_model(model_args, data, 0).eval()
    accelerator = make_accelerator(TrainArgs(cpu=True))
    loader = eval_loader(data.eval, data.eval_collator, 8)
    first = task.evaluate(model, loader, accelerator, data)
    second = task.evaluate(model, loader, accelerator, data)
    assert first == second
    assert first["perplexity"] > 1 and 0 <= first["accuracy"] <= 1
    chosen = sum(sum(1 for x in ex["labels"] if x != -100) for ex in data.eval)
    total = sum(len(ex["labels"]) - 2 for ex in data.eval)
    assert 0.05 < chosen / total < 0.3
    # Every seed's run is scored on the same held-out documents and masked tokens (its
    # spread over seeds is then the training's alone); the training draws are the seed's.
    other = task.prepare(data_args, load_tokenizer(model_args), 8)
    assert task.read(data_args, "eval", "en", 8) == eval_docs
    assert other.eval == data.eval
    assert task.evaluate(model, eval_loader(other.eval, other.eval_collator, 8), accelerator,
                         other) == first  # fmt: skip


def test_mlm_from_the_hub_reads_only_the_documents_drawn(
    bert_dir, hub_dataset, tmp_path, monkeypatch, caplog
):
    """It read the whole text column (Wikipedia: many GB), twice with --validation-ratio,
    to keep a few documents; the documents drawn are those a file of them gives."""
    import datasets

    texts = [f"doc {i} " + " ".join(t) for i, (t, _) in enumerate(ner_sentences(200, 3))]
    features = datasets.Features(title=datasets.Value("string"), text=datasets.Value("string"))
    columns = {"title": [f"T{i}" for i in range(200)], "text": texts}
    repo = hub_dataset("wiki", {"20231101.en": {"train": columns}}, features)
    jsonl = tmp_path / "en.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    read_rows = []
    getitem = datasets.Dataset.__getitem__

    def spy(self, key):
        if key == "text":
            read_rows.append(len(self))
        return getitem(self, key)

    monkeypatch.setattr(datasets.Dataset, "__getitem__", spy)
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    limits = {"max_train_samples": 8, "max_eval_samples": 4, "validation_ratio": 0.2}
    hub = DataArgs(task="mlm", dataset=repo, dataset_config="20231101.{lang}", **limits)

    class Drawn(MlmTask):
        def featurize(self, train, dev, data, tokenizer, seed):
            self.drawn = (train, dev)
            return super().featurize(train, dev, data, tokenizer, seed)

    task = Drawn()
    task.prepare(hub, tokenizer, 5)
    assert read_rows and max(read_rows) <= 8
    local = Drawn()
    local.prepare(DataArgs(task="mlm", train_file=jsonl, **limits), tokenizer, 5)
    assert task.drawn == local.drawn and len(task.drawn[0]) == 8
    # a text column that is not there, or holds no text
    hub.text_column = "body"
    with pytest.raises(UserError, match="wiki: no 'body' column.*title, text.*--text-column"):
        MlmTask().prepare(hub, tokenizer, 5)
    hub.text_column = "title"
    hub.dataset = hub_dataset(
        "ints",
        {"20231101.en": {"train": columns | {"title": list(range(200))}}},
        datasets.Features(title=datasets.Value("int64"), text=datasets.Value("string")),
    )
    with pytest.raises(UserError, match=r"title column holds Value\('int64'\), not text"):
        MlmTask().prepare(hub, tokenizer, 5)


def test_the_evaluation_share_is_the_same_for_every_seed(bert_dir, conll_files):
    """--max-eval-samples draws the same sentences whatever the seed, --max-train-samples
    the seed's own."""
    from polyticket.tasks.ner import NerTask

    train, dev = conll_files
    args = DataArgs(train_file=train, eval_file=dev, max_train_samples=20, max_eval_samples=10)
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    one, two = (NerTask().prepare(args, tokenizer, seed) for seed in (1, 2))
    assert len(one.eval) == 10 and one.eval == two.eval
    assert len(one.train) == 20 and one.train != two.train


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, bert_dir, text_file):
    run = tmp_path_factory.mktemp("mlm") / "run"
    assert (
        main(
            [
                "find",
                "--task",
                "mlm",
                "--model",
                str(bert_dir),
                "--train-file",
                str(text_file),
                "--validation-ratio",
                "0.2",
                "--block-size",
                "32",
                *FAST,
                "--rate",
                "0.5",
                "--target-sparsity",
                "0.5",
                "--epsilon",
                "1000",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run


def test_mlm_find_selects_by_perplexity(mlm_run):
    ticket = read(mlm_run / "ticket.json")
    assert ticket["greater_is_better"] is False and ticket["level"] == 1
    assert read(mlm_run / "level_00" / "metrics.json")["metric"] == "perplexity"


def test_an_mlm_mask_trains_on_ner_and_nli(mlm_run, bert_dir, conll_files, nli_files, tmp_path):
    ticket = str(mlm_run / "ticket.safetensors")
    for task, data in (("ner", conll_files), ("nli", nli_files)):
        out = tmp_path / task
        assert (
            main(
                [
                    "train",
                    "--task",
                    task,
                    "--model",
                    str(bert_dir),
                    "--mask",
                    ticket,
                    *files(*data),
                    *FAST,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert read(out / "metrics.json")["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_random_and_oneshot_controls(mlm_run, bert_dir, conll_files, tmp_path):
    base = ["train", "--task", "ner", "--model", str(bert_dir), *files(*conll_files), *FAST]
    assert main([*base, "--mask", "random", "--sparsity", "0.3", "--out", str(tmp_path / "r")]) == 0
    random_mask = Mask.load(tmp_path / "r" / "mask.safetensors")
    assert random_mask.sparsity() == pytest.approx(0.3, abs=1e-4)
    assert random_mask.metadata["method"] == "random"

    ticket = Mask.load(mlm_run / "ticket.safetensors")
    assert (
        main(
            [
                *base,
                "--mask",
                "random",
                "--sparsity-from",
                str(mlm_run / "ticket.safetensors"),
                "--scope",
                "layer",
                "--out",
                str(tmp_path / "lm"),
            ]
        )
        == 0
    )
    matched = Mask.load(tmp_path / "lm" / "mask.safetensors")
    assert matched.sparsity_by_layer() == ticket.sparsity_by_layer()
    assert matched != ticket

    assert (
        main([*base, "--mask", "oneshot", "--sparsity", "0.4", "--out", str(tmp_path / "o")]) == 0
    )
    oneshot = Mask.load(tmp_path / "o" / "mask.safetensors")
    assert oneshot.sparsity() == pytest.approx(0.4, abs=1e-4)
    from transformers import AutoModel

    theta0 = dict(AutoModel.from_pretrained(bert_dir).named_parameters())
    kept = torch.cat([theta0[n].detach().abs()[oneshot[n]] for n in oneshot])
    pruned = torch.cat([theta0[n].detach().abs()[~oneshot[n]] for n in oneshot])
    assert kept.min() >= pruned.max()

    # --scope layer: each layer at the sparsity, the lowest of each layer gone
    layer_args = ["--mask", "oneshot", "--sparsity", "0.4", "--scope", "layer"]
    assert main([*base, *layer_args, "--out", str(tmp_path / "ol")]) == 0
    by_layer = Mask.load(tmp_path / "ol" / "mask.safetensors")
    assert list(by_layer.sparsity_by_layer().values()) == pytest.approx([0.4, 0.4], abs=1e-3)
    assert by_layer != oneshot


def test_start_from_prunes_further_from_a_mask(bert_dir, conll_files, tmp_path, caplog, capsys):
    from transformers import AutoModel

    base = ["train", "--task", "ner", "--model", str(bert_dir), *files(*conll_files), *FAST]
    assert main([*base, "--mask", "random", "--sparsity", "0.3", "--out", str(tmp_path / "a")]) == 0
    start = Mask.load(tmp_path / "a" / "mask.safetensors")
    # the pooler or embeddings of another scope: left out, and said
    wider = Mask({**start, "embeddings.word_embeddings.weight": torch.ones(
        AutoModel.from_pretrained(bert_dir).embeddings.word_embeddings.weight.shape, dtype=bool
    )}).save(tmp_path / "wider.safetensors")  # fmt: skip
    further = ["--mask", "random", "--sparsity", "0.5", "--start-from", str(wider)]
    assert main([*base, *further, "--out", str(tmp_path / "b")]) == 0
    assert "1 matrices of" in caplog.text and "are not prunable here" in caplog.text
    mask = Mask.load(tmp_path / "b" / "mask.safetensors")
    assert set(mask) == set(start) and mask.sparsity() == pytest.approx(0.5, abs=1e-3)
    assert all(not (mask[n] & ~start[n]).any() for n in start)  # pruned stays pruned
    # a start sparser than the target
    denser = ["--mask", "random", "--sparsity", "0.2", "--start-from", str(wider)]
    assert main([*base, *denser, "--out", str(tmp_path / "c")]) == 2
    assert "give a denser start mask or a higher --sparsity" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["ner", "nli", "mlm"])
def test_random_init_works_for_every_task(
    task, bert_dir, conll_files, nli_files, text_file, tmp_path
):
    data = {
        "ner": files(*conll_files),
        "nli": files(*nli_files),
        "mlm": ["--train-file", str(text_file), "--validation-ratio", "0.2"],
    }[task]
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--task",
                task,
                "--model",
                str(bert_dir),
                "--init",
                "random",
                *data,
                "--max-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read(out / "run.json")["config"]["model"]["init"] == "random"


def test_several_languages_train_on_equal_shares(bert_dir, tmp_path):
    write_conll(tmp_path / "en.conll", ner_sentences(40, 1))
    write_conll(tmp_path / "fr.conll", ner_sentences(25, 2))
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    args = DataArgs(
        language="en,fr", train_file=tmp_path / "{lang}.conll", eval_file=tmp_path / "{lang}.conll"
    )
    assert len(NerTask().prepare(args, tokenizer, 0).train) == 50
    args.max_train_samples = 20
    assert len(NerTask().prepare(args, tokenizer, 0).train) == 20
    shares = equal_shares({"a": list(range(10)), "b": list(range(100, 130))}, 8, 3)
    assert sum(x < 100 for x in shares) == 4 and len(shares) == 8
    assert shares == equal_shares({"a": list(range(10)), "b": list(range(100, 130))}, 8, 3)
    args.train_file = tmp_path / "en.conll"
    with pytest.raises(Exception, match="lang"):
        NerTask().prepare(args, tokenizer, 0)


def test_shares_stay_equal_when_a_language_has_fewer_than_its_share(caplog):
    en, sw = list(range(50)), list(range(100, 110))
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        shares = equal_shares({"en": en, "sw": sw}, 100, 0)
    assert sorted(x >= 100 for x in shares) == [False] * 10 + [True] * 10
    said = "sw has only 10 training examples, fewer than the 50 each of --max-train-samples 100"
    assert said in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        assert len(equal_shares({"en": en, "sw": sw}, None, 0, "eval")) == 20
    assert "sw has only 10 evaluation examples: every language gives 10" in caplog.text


def test_a_limit_below_one_per_language_is_refused_and_a_remainder_said(caplog):
    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, parse_config

    said = r"max_eval_samples 2 leaves some of the 3 languages \(en,fr,de\) without an example"
    flags = ["find", "--language", "en,fr,de", "--max-eval-samples", "2", "--out", "x"]
    with pytest.raises(UserError, match=said):
        parse_config(FindConfig, build_parser().parse_args(flags))
    given = DataArgs(language="en,fr,de", max_eval_samples=2, train_file=Path("absent"))
    with pytest.raises(UserError, match=said):  # before any data is read
        NerTask().prepare(given, None, 0)
    three = {lang: list(range(10)) for lang in ("en", "fr", "de")}
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        assert len(equal_shares(three, 10, 0)) == 9
    assert "--max-train-samples 10 over 3 languages: 3 each, 9 in all" in caplog.text


def test_each_language_draws_from_a_stream_of_its_seed_and_code():
    """Random(seed + place): seed 1's English was seed 0's French (XNLI: its translation),
    and a language's draw hung on its place in --language."""
    parallel = list(range(100))
    zero = equal_shares({"en": parallel, "fr": parallel}, 10, 0)
    one = equal_shares({"en": parallel, "fr": parallel}, 10, 1)
    assert one[:5] != zero[5:]
    alone = equal_shares({"fr": parallel}, 5, 0)
    assert alone == zero[5:] == equal_shares({"fr": parallel, "en": parallel}, 10, 0)[:5]
    # the same in every process: a string seed is not hashed with PYTHONHASHSEED's hash
    code = (
        "from polyticket.tasks.base import equal_shares as e; print(e({'fr': [*range(100)]}, 5, 0))"
    )
    for hashseed in ("1", "2"):
        env = {**CHILD_ENV, "PYTHONHASHSEED": hashseed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == str(alone), out.stderr


def test_original_mask_file_and_json_config(bert_dir, conll_files, tmp_path, caplog):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(bert_dir, num_labels=7)
    prunable = find_prunable(model)
    torch.manual_seed(0)
    original = {
        f"bert.{n}_mask": (torch.rand(p.shape) > 0.4).float() for n, p in prunable.params.items()
    }
    torch.save(original, tmp_path / "fr_mask.pt")
    assert (
        main(["masks", "import", str(tmp_path / "fr_mask.pt"), str(tmp_path / "fr.safetensors")])
        == 0
    )
    imported = Mask.load(tmp_path / "fr.safetensors")
    assert imported == Mask({n: original[f"bert.{n}_mask"].bool() for n in prunable.params})

    assert (
        main(
            [
                "masks",
                "export",
                str(tmp_path / "fr.safetensors"),
                str(tmp_path / "back.pt"),
                "--format",
                "torch-prune",
                "--prefix",
                "bert.",
            ]
        )
        == 0
    )
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)

    config = {
        "output_dir": str(tmp_path / "orig-out"),
        "model_name_or_path": str(bert_dir),
        "task_name": "ner",
        "data_language": "fr",
        "train_file": str(conll_files[0]),
        "validation_file": str(conll_files[1]),
        "do_train": True,
        "do_eval": True,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "max_steps": 3,
        "logging_steps": 3,
        "save_steps": 0,
        "seed": 57,
        "mask_dir": str(tmp_path / "fr_mask.pt"),
        "weight_init": "pre",
        "pad_to_max_length": True,
    }
    (tmp_path / "orig.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--config", str(tmp_path / "orig.json")]) == 0
    for ignored in ("do_train", "do_eval", "save_steps", "pad_to_max_length"):
        assert caplog.text.count(f"'{ignored}'") == 1, ignored
    metrics = read(tmp_path / "orig-out" / "metrics.json")
    assert metrics["sparsity"] == pytest.approx(imported.sparsity())
    run = read(tmp_path / "orig-out" / "run.json")
    assert run["config"]["data"]["language"] == "fr" and run["config"]["train"]["seed"] == 57


def test_presets_set_the_papers_settings_and_flags_win():
    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, parse_config

    args = build_parser().parse_args(
        [
            "find",
            "--preset",
            "paper-xnli",
            "--learning-rate",
            "1e-5",
            "--language",
            "fr",
            "--out",
            "x",
        ]
    )
    config = parse_config(FindConfig, args)
    assert config.data.task == "nli" and config.data.dataset == "facebook/xnli"
    assert config.train.batch_size == 32 and config.train.epochs == 3
    assert config.train.learning_rate == 1e-5
    assert config.model.model == "bert-base-multilingual-cased"


def test_epochs_given_over_a_presets_steps_train_by_epochs(tmp_path, caplog):
    """paper-mlm sets max_steps (which wins over epochs, as in HF's Trainer): --epochs over
    it, or epochs in a config file, means epochs."""
    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, parse_config

    def parse(*flags):
        args = build_parser().parse_args(["find", "--preset", "paper-mlm", *flags, "--out", "x"])
        return parse_config(FindConfig, args).train

    assert parse().max_steps == 10_000
    by_epochs = parse("--epochs", "0.5")
    assert (by_epochs.max_steps, by_epochs.epochs) == (None, 0.5)
    assert "epochs 0.5 replaces max_steps 10000 given before it" in caplog.text
    both = parse("--epochs", "0.5", "--max-steps", "7")
    assert (both.max_steps, both.epochs) == (7, 0.5)
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    assert parse("--config", str(tmp_path / "c.yaml")).max_steps is None
    # --preset wins over a preset the file names (it said "unknown key 'preset'")
    (tmp_path / "d.yaml").write_text("preset: paper-ner\n")
    assert parse("--config", str(tmp_path / "d.yaml")).max_steps == 10_000


def test_xnli_from_the_hub_uses_the_language_and_label_ids(xlmr_dir, monkeypatch, caplog):
    import datasets

    from polyticket.tasks.nli import NliTask

    asked = []

    def fake_load(name, config, split, revision=None):
        asked.append((name, config, split))
        return datasets.Dataset.from_dict(
            {
                "premise": ["Il pleut.", "Le chat dort."],
                "hypothesis": ["Il fait beau.", "Un chat."],
                "label": [2, 0],
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    tokenizer = load_tokenizer(ModelArgs(model=str(xlmr_dir)))
    data = NliTask().prepare(
        DataArgs(task="nli", dataset="facebook/xnli", language="fr"), tokenizer, 0
    )
    assert asked == [("facebook/xnli", "fr", "train"), ("facebook/xnli", "fr", "validation")]
    assert sorted(ex["labels"] for ex in data.train) == [0, 2]
    # SNLI/MNLI-style: -1 marks a pair without a gold label; other label names are refused
    snli = datasets.Dataset.from_dict(
        {"premise": ["A.", "B."], "hypothesis": ["C.", "D."], "label": [1, -1]},
        features=datasets.Features(
            premise=datasets.Value("string"),
            hypothesis=datasets.Value("string"),
            label=datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        ),
    )
    hub = DataArgs(task="nli", dataset="snli")
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        assert NliTask().from_hub(snli, hub) == [("A.", "C.", 1)]
    assert "snli: 1 pairs without a gold label (-1) left out" in caplog.text
    other = snli.cast_column("label", datasets.ClassLabel(names=["yes", "maybe", "no"]))
    with pytest.raises(UserError, match="snli: its labels are \\['yes', 'maybe', 'no'\\]"):
        NliTask().from_hub(other, hub)


def test_hub_nli_takes_label_words_checks_ids_and_names_missing_columns(hub_dataset):
    """String labels gave a ValueError, a plain 3 failed inside the cross-entropy, a NER
    dataset a KeyError 'premise'."""
    import datasets

    def nli(name, labels, dtype):
        features = datasets.Features(
            sentence1=datasets.Value("string"),
            sentence2=datasets.Value("string"),
            label=datasets.Value(dtype),
        )
        rows = {"sentence1": ["A."] * len(labels), "sentence2": ["B."] * len(labels)}
        split = rows | {"label": labels}
        return hub_dataset(name, {"en": {"train": split, "validation": split}}, features)

    words = nli("words", ["entailment", "Contradiction", "1"], "string")
    hub = DataArgs(task="nli", dataset=words)
    assert [label for _, _, label in NliTask().read(hub, "train", "en", 0)] == [0, 2, 1]
    ids = nli("ids", [0, -1, 3], "int64")
    with pytest.raises(UserError, match=r"ids \(en, train\) row 2: label 3 is none of"):
        NliTask().read(DataArgs(task="nli", dataset=ids), "train", "en", 0)
    ner = datasets.Features(tokens=datasets.List(datasets.Value("string")))
    wikiann = hub_dataset("wikiann", {"en": {"train": {"tokens": [["A"]]}}}, ner)
    with pytest.raises(
        UserError,
        match=r"wikiann: no 'premise' or 'sentence1' column, which --task nli reads; its "
        r"columns are tokens: is it a dataset of another task\?",
    ):
        NliTask().read(DataArgs(task="nli", dataset=wikiann), "train", "en", 0)


def test_nli_files_take_words_or_ids_and_name_the_bad_line(tmp_path):
    from polyticket.errors import UserError
    from polyticket.tasks.nli import read_pairs

    tsv = tmp_path / "x.tsv"
    tsv.write_text("sentence1\tsentence2\tgold_label\nA\tB\tneutral\nC\tD\t2\n")
    assert read_pairs(tsv) == [("A", "B", 1), ("C", "D", 2)]
    tsv.write_text("premise\thypothesis\tlabel\nA\tB\tmaybe\n")
    with pytest.raises(UserError, match=r"x\.tsv:2.*maybe"):
        read_pairs(tsv)
    # XNLI's dev and test TSVs hold every language in one file: the rows of one are read
    tsv.write_text("language\tsentence1\tsentence2\tgold_label\nen\tA\tB\t0\nfr\tC\tD\t1\n")
    assert read_pairs(tsv, "fr") == [("C", "D", 1)]
    assert len(read_pairs(tsv)) == 2
    with pytest.raises(UserError, match="no rows of language de .*has en, fr"):
        read_pairs(tsv, "de")
    tsv.write_text(tsv.read_text() + "\tE\tF\t2\n")  # a row of no language among them
    with pytest.raises(UserError, match=r"x\.tsv:4: no language, in a file with a language"):
        read_pairs(tsv, "fr")
    assert len(read_pairs(tsv)) == 3  # no language asked (one file, one language): all
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(
        '{"premise": "A", "hypothesis": "B", "label": "Entailment"}\n{"premise": "A"}\n'
    )
    with pytest.raises(UserError, match=r"x\.jsonl:2.*hypothesis"):
        read_pairs(jsonl)


def test_the_dataset_revision_reaches_load_dataset_and_the_run_inputs(bert_dir, monkeypatch):
    import datasets

    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, parse_config
    from polyticket.tasks.labels import WIKIANN_LABELS

    asked = []

    def fake_load(name, config, split, revision=None):
        asked.append(revision)
        return datasets.Dataset.from_dict(
            {"tokens": [["Anna", "sang"]], "ner_tags": [[1, 0]]},
            datasets.Features(
                tokens=datasets.List(datasets.Value("string")),
                ner_tags=datasets.List(datasets.ClassLabel(names=list(WIKIANN_LABELS))),
            ),
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    flags = ["find", "--dataset", "org/ner", "--dataset-revision", "v1.2", "--out", "x"]
    config = parse_config(FindConfig, build_parser().parse_args(flags))
    data = NerTask().prepare(config.data, tokenizer, 0)
    assert asked == ["v1.2", "v1.2"]
    assert data.inputs and all(i["revision"] == "v1.2" for i in data.inputs)
    # none given, none recorded: a run started before the knob existed continues
    asked.clear()
    data = NerTask().prepare(DataArgs(dataset="org/ner"), tokenizer, 0)
    assert asked == [None, None] and all("revision" not in i for i in data.inputs)


def test_several_languages_need_lang_in_the_dataset_config(monkeypatch):
    """Else every language silently read the same configuration."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("loaded"))
    given = DataArgs(task="nli", dataset="snli", dataset_config="plain_text", language="en,fr")
    with pytest.raises(UserError, match=r"several languages, put \{lang\} in --dataset-config"):
        NliTask().prepare(given, None, 0)
