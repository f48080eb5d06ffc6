"""NER data: CoNLL and JSON lines, WikiANN label ids, first-sub-word labels, seqeval F1."""

import json

import pytest

from polyticket.config import DataArgs, ModelArgs
from polyticket.errors import UserError
from polyticket.models import load_tokenizer
from polyticket.tasks.labels import WIKIANN_LABELS
from polyticket.tasks.ner import NerTask, read_conll, read_jsonl


def test_conll_reads_last_column_and_skips_docstart(tmp_path):
    path = tmp_path / "d.conll"
    path.write_text(
        "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nParis NNP B-NP B-LOC\n"
    )
    assert read_conll(path) == [(["EU", "rejects"], ["B-ORG", "O"]), (["Paris"], ["B-LOC"])]
    # a line whose column count differs from the file's is a fault, not a guess
    path.write_text("EU NNP B-NP B-ORG\n\nParis B-LOC\n")
    with pytest.raises(UserError, match=r"d.conll:3: 2 columns, but line 1 has 4"):
        read_conll(path)


def test_jsonl_with_string_tags_or_wikiann_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"tokens": ["Anna", "Berlin"], "ner_tags": [1, 5]})
        + "\n\n"
        + json.dumps({"tokens": ["x"], "ner_tags": ["B-ORG"]})
        + "\n"
    )
    assert read_jsonl(path, WIKIANN_LABELS) == [
        (["Anna", "Berlin"], ["B-PER", "B-LOC"]),
        (["x"], ["B-ORG"]),
    ]
    path.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": [1]}) + "\n")
    with pytest.raises(UserError, match="d.jsonl:1"):
        read_jsonl(path, WIKIANN_LABELS)
    path.write_text("{}\n" + json.dumps({"tokens": ["a"], "ner_tags": [0]}) + "\nnot json\n")
    with pytest.raises(UserError, match="d.jsonl:1"):
        read_jsonl(path, WIKIANN_LABELS)


def test_only_the_first_sub_word_carries_the_label(bert_dir, tmp_path):
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    # a word the tiny vocabulary splits into several known pieces
    long_word = next(
        w
        for w in ("Parisberlin", "Smithsons", "Madridos")
        if len(tokenizer.tokenize(w)) > 1 and "[UNK]" not in tokenizer.tokenize(w)
    )
    pieces = [tokenizer.tokenize(w) for w in (long_word, "Paris")]
    path = tmp_path / "d.conll"
    path.write_text(f"{long_word}\tB-LOC\nParis\tB-LOC\n")
    data = NerTask().prepare(DataArgs(train_file=path, eval_file=path), tokenizer, 0)
    labels = data.train[0]["labels"]
    loc = WIKIANN_LABELS.index("B-LOC")
    expected = [-100, loc] + [-100] * (len(pieces[0]) - 1) + [loc] + [-100] * len(pieces[1])
    assert labels == expected
    assert data.info["labels"] == list(WIKIANN_LABELS)


def test_entities_truncation_leaves_unscored_are_counted(bert_dir, tmp_path, caplog):
    """Words past max_seq_length get no label, so F1 leaves their entities out: said."""
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    path = tmp_path / "d.conll"
    long = "Anna\tB-PER\nlives\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\nwith\tO\nBob\tB-PER\n"
    path.write_text(long + "\nParis\tB-LOC\n")
    for length, cut in ((6, 2), (64, 0)):  # [CLS], four words, [SEP]: New York cut, Bob gone
        caplog.clear()
        with caplog.at_level("WARNING", logger="polyticket"):
            data = DataArgs(train_file=path, eval_file=path, max_seq_length=length)
            NerTask().prepare(data, tokenizer, 0)
        said = f"{cut} of the evaluation data's 4 entities (in 1 sentences) lie wholly or partly"
        assert (said in caplog.text) == bool(cut), caplog.text
    # and unscored they are: cut between "New" and "York", "New" keeps no tag to count as a
    # whole entity of its own (in training it keeps its tag)
    words = [line.split("\t")[0] for line in long.splitlines()]
    york = tokenizer(words, is_split_into_words=True).word_ids().index(4)
    data = NerTask().prepare(
        DataArgs(train_file=path, eval_file=path, max_seq_length=york + 1), tokenizer, 0
    )
    names = data.info["labels"]
    scored = [names[x] for x in data.eval[0]["labels"] if x != -100]
    assert scored == ["B-PER", "O", "O"]
    assert [names[x] for x in data.train[0]["labels"] if x != -100] == ["B-PER", "O", "O", "B-LOC"]
    # a word with no pieces (a zero-width space) is no cut, at exactly the full length
    words = ["\u200b", "Anna", "lives", "in", "Paris"]
    tags = ["O", "B-PER", "O", "O", "B-LOC"]
    path.write_text("".join(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True)))
    exact = len(tokenizer(words, is_split_into_words=True)["input_ids"])
    caplog.clear()
    with caplog.at_level("WARNING", logger="polyticket"):
        data = DataArgs(train_file=path, eval_file=path, max_seq_length=exact)
        NerTask().prepare(data, tokenizer, 0)
    assert "not scored" not in caplog.text


def test_the_tag_goes_on_the_first_piece_that_shows_the_word(tmp_path):
    """Sentencepiece (XLM-R, e5) writes a Chinese character as a bare "▁" and the
    character: the tag goes on the character, not on the blank piece all words share."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<pad>", "▁", "北", "京", "▁Paris", "▁Par", "is"]
    spm = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=0))
    spm.pre_tokenizer = pre_tokenizers.Metaspace()
    spm.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=spm, unk_token="<unk>", pad_token="<pad>")
    path = tmp_path / "d.conll"
    path.write_text("北京\tB-LOC\nParis\tB-LOC\n京\tO\n", encoding="utf-8")
    data = NerTask().prepare(DataArgs(train_file=path, eval_file=path), tokenizer, 0)
    feature = data.train[0]
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == [
        "▁",
        "北",
        "京",
        "▁Paris",
        "▁",
        "京",
    ]
    loc, o = WIKIANN_LABELS.index("B-LOC"), WIKIANN_LABELS.index("O")
    assert feature["labels"] == [-100, loc, -100, loc, -100, o]


def test_other_tag_sets_and_unknown_eval_tags(bert_dir, tmp_path):
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    train = tmp_path / "t.conll"
    train.write_text("Anna\tB-PERSON\nsang\tO\n")
    dev = tmp_path / "d.conll"
    dev.write_text("Anna\tB-MISC\n")
    with pytest.raises(UserError, match="B-MISC"):
        NerTask().prepare(DataArgs(train_file=train, eval_file=dev), tokenizer, 0)
    data = NerTask().prepare(DataArgs(train_file=train, eval_file=train), tokenizer, 0)
    assert data.info["labels"] == ["O", "B-PERSON"]


def test_hub_dataset_uses_the_configuration_and_its_label_names(bert_dir, monkeypatch):
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(WIKIANN_LABELS))),
        }
    )
    asked = []

    def fake_load(name, config, split, revision=None):
        asked.append((name, config, split))
        return datasets.Dataset.from_dict(
            {"tokens": [["Anna", "lebt", "in", "Berlin"]], "ner_tags": [[1, 0, 0, 5]]}, features
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    data = NerTask().prepare(DataArgs(dataset="unimelb-nlp/wikiann", language="de"), tokenizer, 0)
    assert asked == [
        ("unimelb-nlp/wikiann", "de", "train"),
        ("unimelb-nlp/wikiann", "de", "validation"),
    ]
    assert data.info["labels"] == list(WIKIANN_LABELS)
    assert [x for x in data.train[0]["labels"] if x != -100] == [1, 0, 0, 5]


def ner_features(names, tags=None):
    import datasets

    tag = tags or datasets.ClassLabel(names=list(names))
    return datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(tag)}
    )


def test_hub_sentences_with_a_tag_without_label_are_left_out(bert_dir, hub_dataset, caplog):
    """ClassLabel's -1 ("no label") became names[-1], I-LOC: such sentences are left out
    and counted, as NLI leaves out its pairs without a gold label."""
    train = {
        "tokens": [["Anna", "x"], ["Bob", "sang"], ["Paris"]],
        "ner_tags": [[1, -1], [1, 0], [5]],
    }
    dev = {"tokens": [["Anna", "x"]], "ner_tags": [[1, -2]]}
    dev2 = {"tokens": [["Anna", "x"]], "ner_tags": [[1, 0]]}
    repo = hub_dataset(
        "neg",
        {"en": {"train": train, "validation": dev2}, "de": {"train": train, "validation": dev}},
        ner_features(WIKIANN_LABELS),
    )
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    with caplog.at_level("WARNING", logger="polyticket"):
        data = NerTask().prepare(DataArgs(dataset=repo), tokenizer, 0)
    assert "1 sentences with a tag without a label (a negative id) left out" in caplog.text
    names = data.info["labels"]
    assert [[names[x] for x in f["labels"] if x != -100] for f in data.train] == [
        ["B-PER", "O"],
        ["B-LOC"],
    ]
    # a sentence of another negative id too; a split left with none is refused by name
    with pytest.raises(UserError, match=r"neg \(de, eval\): no usable examples"):
        NerTask().prepare(DataArgs(dataset=repo, language="de"), tokenizer, 0)


def test_hub_label_list_is_the_class_labels_whatever_the_seed_draws(bert_dir, hub_dataset):
    """The label list came from the sampled training tags: the head and its ids changed
    with the seed, and a tag only in the evaluation split was refused."""
    names = ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    o, per, misc = names.index("O"), names.index("B-PER"), names.index("B-MISC")
    train = {
        "tokens": [["Anna", "x"]] * 9 + [["Paris", "x"]],
        "ner_tags": [[per, o]] * 9 + [[0, o]],
    }
    dev = {"tokens": [["Euro", "x"]], "ner_tags": [[misc, o]]}
    repo = hub_dataset("conll", {"en": {"train": train, "validation": dev}}, ner_features(names))
    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    for seed in range(3):
        data = NerTask().prepare(DataArgs(dataset=repo, max_train_samples=3), tokenizer, seed)
        assert data.info["labels"] == names
        assert data.eval[0]["labels"][1] == misc
    # --labels still wins; the ids name the dataset's tags
    given = DataArgs(dataset=repo, labels=["O", "B-PER", "B-LOC", "B-MISC"])
    data = NerTask().prepare(given, tokenizer, 0)
    assert data.info["labels"] == given.labels and data.eval[0]["labels"][1] == 3


def test_hub_columns_of_another_task_or_type_are_refused_by_name(bert_dir, hub_dataset):
    import datasets

    tokenizer = load_tokenizer(ModelArgs(model=str(bert_dir)))
    nli = datasets.Features(premise=datasets.Value("string"), label=datasets.Value("int64"))
    repo = hub_dataset(
        "nli", {"en": {s: {"premise": ["A."], "label": [0]} for s in ("train", "validation")}}, nli
    )
    with pytest.raises(
        UserError,
        match=r"nli: no 'tokens' column, which --task ner reads; its columns are premise, label",
    ):
        NerTask().prepare(DataArgs(dataset=repo), tokenizer, 0)
    # tags stored as strings are the tags themselves (checked as in files)
    rows = {"tokens": [["Anna", "sang"]], "ner_tags": [["B-PER", "O"]]}
    strings = ner_features((), datasets.Value("string"))
    repo = hub_dataset("str", {"en": {"train": rows, "validation": rows}}, strings)
    data = NerTask().prepare(DataArgs(dataset=repo), tokenizer, 0)
    assert data.info["labels"] == list(WIKIANN_LABELS)
    assert [x for x in data.train[0]["labels"] if x != -100] == [1, 0]
    rows = {"tokens": [["Anna", "sang"]], "ner_tags": [["PER", "O"]]}
    repo = hub_dataset("bad", {"en": {"train": rows, "validation": rows}}, strings)
    with pytest.raises(UserError, match=r"bad \(en, train\) row 0: tag 'PER' is not O, B-TYPE"):
        NerTask().prepare(DataArgs(dataset=repo), tokenizer, 0)
    floats = ner_features((), datasets.Value("float32"))
    repo = hub_dataset("float", {"en": {"train": {"tokens": [["a"]], "ner_tags": [[1.0]]}}}, floats)
    with pytest.raises(
        UserError, match=r"float: its ner_tags column holds List\(Value\('float32'\)\)"
    ):
        NerTask().prepare(DataArgs(dataset=repo), tokenizer, 0)
