"""Deterministic synthetic multilingual data, generated offline.

THIS DATA IS SYNTHETIC.  Every sentence comes from a small set of hand-written templates
(see :mod:`polyticket.data.templates` and ``TEMPLATE_COUNTS``) whose slots are filled with
person names from ``faker`` locales (hand lists for Urdu, which faker lacks), hand lists of
real cities and organisations written in each language's own script, and years.  Raw text for
masked language modelling also mixes in the handful of real sentences that the
``tokenizerbench`` package ships for the language.

Every template list and every entity list is split into a training part and a held-out part
that share no template and no string (``split="train"`` draws on the first; ``"dev"`` and
``"test"`` on the second, with different random streams), so that evaluation sentences use
templates and names never seen in training.  NER slots often take names that other sentences
use with another type (a city as a person or a club, a family name as a firm; NLI slots
take none of these), organisations contain places and family names, some sentences have no entity;
60% of the NLI pairs reuse the premise's words (swapped arguments, negation, quantifiers,
numbers, beliefs, "it is not true that", symmetric relations), so that neither a hypothesis
made of the premise's words nor a reordering nor a negation gives the label.  No held-out
template has a sentence frame (``template_frames``) of any training template, whatever the
task.  The knobs are the ``*_SHARE`` constants below.

What it can show:

* that the whole pipeline (tokenisation, label alignment, training, pruning, masks,
  evaluation, reports) runs end to end for every task and language, without a network;
* relative comparisons between masks or pruning methods trained and evaluated on the same
  synthetic data (e.g. how much two languages' tickets overlap);
* cross-lingual / cross-script transfer on a toy task (train on one language, test on another).

What it cannot show:

* absolute scores comparable with WikiANN, XNLI or Wikipedia perplexities: a handful of
  sentence frames per language, even if the held-out ones are never trained on;
* real linguistic diversity: vocabulary, syntax, morphology and topics are a tiny, clean
  slice of each language.

Tasks and formats (chosen by the extension of the output file):

* ``ner``: ``.conll`` (``token<TAB>tag``, blank line between sentences) or ``.jsonl``
  (``{"tokens": [...], "ner_tags": [...]}``); IOB2 tags over PER/LOC/ORG (WikiANN's seven
  labels).  Chinese tokens are single characters, as in WikiANN.
* ``nli``: ``.tsv`` (header ``premise<TAB>hypothesis<TAB>label``) or ``.jsonl``; labels
  ``entailment``/``neutral``/``contradiction`` cycle (exactly balanced when ``size`` is a
  multiple of 3) and are then shuffled.
* ``parallel``: ``.txt`` (one sentence per line) or ``.jsonl`` (``{"text": ...}``); the
  sentence at line *i* says the same thing in every language for a given ``size`` and
  ``seed`` and ``split`` (same template, same city concepts, same year).
* ``text``: ``.txt`` (one document per line) or ``.jsonl`` (``{"text": ...}``, WikiExtractor
  style); documents join 3 to 6 sentences.

Everything is a pure function of its arguments (and of the installed ``faker`` and
``tokenizerbench`` versions): the same arguments give byte-identical files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import itertools
import json
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyticket.data import templates as T
from polyticket.errors import UserError
from polyticket.io import write_text
from polyticket.tasks.labels import WIKIANN_LABELS, XNLI_LABELS

SYNTH_LANGUAGES: tuple[str, ...] = T.LANGUAGES
SYNTH_TASKS: tuple[str, ...] = ("ner", "nli", "parallel", "text")
SYNTH_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "ner": (".conll", ".jsonl"),
    "nli": (".tsv", ".jsonl"),
    "parallel": (".txt", ".jsonl"),
    "text": (".txt", ".jsonl"),
}
# the datasets' own label lists, so that generated files mean what WikiANN's and XNLI's do
NLI_LABELS = XNLI_LABELS
NER_LABELS = WIKIANN_LABELS
#: ``train`` draws on the training part of every template list and entity list; ``dev`` and
#: ``test`` both draw on the held-out part (disjoint from train), with different random streams.
SPLITS: tuple[str, ...] = ("train", "dev", "test")

# Difficulty knobs (calibrated with polyticket train on e5-small; see the README).
#: share of entity strings (given names, family names, organisations, extra cities, ambiguous
#: names; city concepts as a whole) held out from training.
HELD_OUT_SHARE = 0.3
#: share of NER sentences without any entity.
NER_EMPTY_SHARE = 0.1
#: share of entity slots filled with a name that other sentences use with another type.
NER_AMBIGUOUS_SHARE = 0.25
#: share of (non-ambiguous) organisation slots filled from ORG_PATTERNS ("Bank of Kazan").
NER_NESTED_SHARE = 0.3
#: share of NLI pairs from NLI_HARD (swaps, negation, quantifiers, numbers, beliefs, "it is
#: not true that", symmetric relations).
NLI_HARD_SHARE = 0.6

#: language -> task -> number of hand-written templates (train and held-out parts together;
#: ``split_counts`` gives each part).  ``ner`` counts sentence templates with entities and
#: without; ``nli`` counts items (a premise with hypotheses for every label); ``text`` counts
#: all the templates its documents draw from.
TEMPLATE_COUNTS: dict[str, dict[str, int]] = {
    lang: {
        "ner": len(T.NER_TEMPLATES[lang]) + len(T.NER_EMPTY[lang]),
        "nli": len(T.NLI_TEMPLATES[lang]) + len(T.NLI_HARD[lang]),
        "parallel": sum(1 for t in T.PARALLEL_TEMPLATES if lang in t),
        "text": len(T.NER_TEMPLATES[lang])
        + len(T.NER_EMPTY[lang])
        + len(T.NLI_TEMPLATES[lang])
        + len(T.NLI_HARD[lang])
        + sum(1 for t in T.PARALLEL_TEMPLATES if lang in t),
    }
    for lang in SYNTH_LANGUAGES
}

#: Unicode script (first word of the character name) each language is written in.
LANGUAGE_SCRIPTS: dict[str, str] = {
    "en": "LATIN",
    "fr": "LATIN",
    "de": "LATIN",
    "es": "LATIN",
    "ru": "CYRILLIC",
    "zh": "CJK",
    "ar": "ARABIC",
    "hi": "DEVANAGARI",
    "fa": "ARABIC",
    "ur": "ARABIC",
}

_FAKER_LOCALES: dict[str, str] = {
    "en": "en_US",
    "fr": "fr_FR",
    "de": "de_DE",
    "es": "es_ES",
    "ru": "ru_RU",
    "zh": "zh_CN",
    "ar": "ar_AA",
    "hi": "hi_IN",
    "fa": "fa_IR",
}
# Locales whose faker companies / cities come out clean and in native script (checked by hand;
# every value is still filtered by _clean_name).
_FAKER_ORG_LANGS = ("en", "fr", "de", "zh", "fa")
# (not zh_CN: its cities are given names plus 市/县, "丽丽市", "超市"; hand lists instead)
_FAKER_CITY_LANGS = ("de", "es", "hi")

_TOKENIZERBENCH_NAMES: dict[str, str] = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "zh": "chinese_simplified",
    "ar": "arabic",
    "hi": "hindi",
    "fa": "persian",
    "ur": "urdu",
}

_DIGITS: dict[str, str] = {"ar": "٠١٢٣٤٥٦٧٨٩", "fa": "۰۱۲۳۴۵۶۷۸۹"}
_CASES: dict[str, int] = {"nom": 0, "loc": 1, "gen": 2, "acc": 3}
_SLOT_TYPES: dict[str, str | None] = {
    "PER": "PER",
    "PER2": "PER",
    "LOC": "LOC",
    "LOC2": "LOC",
    "ORG": "ORG",
    "ORG2": "ORG",
    "YEAR": None,
    "YEAR2": None,
    "NUM": None,
    "NUMLO": None,
    "NUMHI": None,
    "SUR": None,
}
_TOKEN_RE = re.compile(r"\{([A-Z]+2?)(?::([a-z]+))?\}|\[([^|\]]*)\|([^\]]*)\]")
_APOSTROPHES = "'’"
_FR_ELIDING = re.compile(r"(?:^|(?<=\s))(de|De|que|Que|le|Le|la|La) $")
_FR_VOWELS = "AEIOUYÀÂÉÈÊËÎÏÔÙÛŒaeiouyàâéèêëîïôùûœ"
_ES_Y = re.compile(r"(?:^|(?<=\s))y $")
_SENTENCE_END = ".!?。！？۔।؟"
_BAD_DEVANAGARI = re.compile("[\u093e-\u094c][\u093e-\u094c]")

Segments = list[tuple[str, "str | None"]]


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts, independent of PYTHONHASHSEED and of the platform."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(_stable_seed(seed, *parts))


def char_script(ch: str) -> str:
    """First word of the Unicode name of ``ch`` (``LATIN``, ``CYRILLIC``, ``CJK``, ...)."""
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def script_fraction(text: str, script: str) -> float:
    """Fraction of the letters of ``text`` written in ``script`` (1.0 when there are none)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(char_script(c) == script for c in letters) / len(letters)


def _localize_digits(text: str, lang: str) -> str:
    table = _DIGITS.get(lang)
    if table is None:
        return text
    return text.translate(str.maketrans("0123456789", table))


def _normalize(text: str, lang: str) -> str:
    if lang == "fa":  # faker's fa_IR mixes Arabic yeh/kaf into Persian text
        text = text.replace("ي", "ی").replace("ك", "ک")
    return " ".join(text.split())


def _clean_name(text: str, lang: str) -> bool:
    """A faker value we accept as an entity: native script, no punctuation that breaks BIO."""
    if not text or any(c in ",.()«»\"'&/:;" or c.isdigit() for c in text):
        return False
    if _BAD_DEVANAGARI.search(text):  # faker's hi_IN has a few malformed names
        return False
    return script_fraction(text, LANGUAGE_SCRIPTS[lang]) == 1.0


def _is_peelable(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P") and ch not in _APOSTROPHES


def tokenize(text: str, language: str) -> list[str]:
    """WikiANN-like tokens: single characters for Chinese; otherwise whitespace-separated
    words with leading/trailing punctuation split off (apostrophes and inner hyphens stay)."""
    if language == "zh":
        return [c for c in text if not c.isspace()]
    out: list[str] = []
    for word in text.split():
        lead: list[str] = []
        trail: list[str] = []
        while word and _is_peelable(word[0]):
            lead.append(word[0])
            word = word[1:]
        while word and _is_peelable(word[-1]):
            trail.append(word[-1])
            word = word[:-1]
        out.extend(lead)
        if word:
            out.append(word)
        out.extend(reversed(trail))
    return out


def check_language(language: str) -> str:
    if language not in SYNTH_LANGUAGES:
        raise UserError(
            f"synthetic data: unsupported language {language!r}; "
            f"supported: {', '.join(SYNTH_LANGUAGES)}"
        )
    return language


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UserError(f"synthetic data: size must be a non-negative integer, got {size!r}")
    return size


# ---------------------------------------------------------------------------------------------
# Real sentences from tokenizerbench (its top-level import is broken in 0.2.0: parse the file)
# ---------------------------------------------------------------------------------------------
def _tokenizerbench_file() -> Path | None:
    try:
        spec = importlib.util.find_spec("tokenizerbench")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "human_languages.py"
        if path.is_file():
            return path
    return None


def _good_real_sentence(text: str, lang: str) -> bool:
    if len(text) < 8 or text[-1] not in _SENTENCE_END or ":" in text or "：" in text:
        return False
    if "http" in text or "@" in text or script_fraction(text, LANGUAGE_SCRIPTS[lang]) < 1.0:
        return False
    if sum(c.isalpha() for c in text) < 6:
        return False
    words = text.split()
    if lang != "zh":
        if len(words) < 3 or len(set(words)) < 0.7 * len(words):
            return False
        if sum(len(w) <= 1 for w in words) > len(words) / 3:
            return False
        for w in words:  # reject sHoUtInG / aLtErNaTiNg case stress tests
            letters = [c for c in w if c.isalpha()]
            if len(letters) > 1 and any(c.isupper() for c in letters[1:]):
                return False
    return True


@functools.cache
def tokenizerbench_sentences(language: str) -> tuple[str, ...]:
    """Real, clean, single-script sentences that ``tokenizerbench`` ships for ``language``
    (empty when the package is missing).  File order, duplicates removed."""
    check_language(language)
    path = _tokenizerbench_file()
    if path is None:
        return ()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ()
    name = _TOKENIZERBENCH_NAMES[language]
    found: dict[str, None] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)):
            continue
        for key, value in zip(node.value.keys, node.value.values, strict=True):
            if not (isinstance(key, ast.Constant) and key.value == name):
                continue
            if not isinstance(value, ast.List):
                continue
            for elt in value.elts:  # literal strings only: skip "x " * 50 stress tests
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    text = " ".join(elt.value.split())
                    if _good_real_sentence(text, language):
                        found.setdefault(text, None)
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Entity pools
# ---------------------------------------------------------------------------------------------
@functools.cache
def _faker_instance(locale: str):  # faker is an optional dependency
    try:
        from faker import Faker
    except ImportError as exc:  # pragma: no cover - faker is installed with [offline]
        raise UserError(
            "synthetic NER/NLI/text data needs the 'faker' package: "
            "pip install 'polyticket[offline]'"
        ) from exc
    return Faker(locale)


@dataclass(frozen=True)
class _Pools:
    """The entity strings of one part (train or held-out) of a language."""

    first: tuple[tuple[str, ...], tuple[str, ...]]  # given names: male, female
    last: tuple[tuple[str, ...], tuple[str, ...]]  # family names: male, female forms
    orgs: tuple[str, ...]
    cities: tuple[tuple[str, ...], ...]  # case forms
    ambiguous: tuple[tuple[str, ...], ...]  # case forms, as cities

    def strings(self) -> set[str]:
        return {
            *self.first[0],
            *self.first[1],
            *self.last[0],
            *self.last[1],
            *self.orgs,
            *(form for city in self.cities for form in city),
            *(form for name in self.ambiguous for form in name),
        }


def _dedupe(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _part(split: str) -> str:
    if split not in SPLITS:
        raise UserError(
            f"synthetic data: unsupported split {split!r}; supported: {', '.join(SPLITS)}"
        )
    return "train" if split == "train" else "eval"


def _held_out_index(i: int) -> bool:
    """Templates (and real sentences, city concepts) at positions 1, 4, 7, ... are held out."""
    return i % 3 == 1


def _held_out_string(text: str) -> bool:
    """About HELD_OUT_SHARE of entity strings are held out, by a hash of the string alone."""
    return _stable_seed("held-out", text) % 1000 < HELD_OUT_SHARE * 1000


def _in_part(items: Sequence, part: str, held_out: Callable[[int], bool] = _held_out_index):
    return tuple(x for i, x in enumerate(items) if held_out(i) == (part == "eval"))


def _strings_in_part(values: Sequence[str], part: str) -> tuple[str, ...]:
    return tuple(v for v in _dedupe(values) if _held_out_string(v) == (part == "eval"))


def _city_in_part(i: int, part: str) -> bool:
    return _held_out_string("city:" + T.CITIES[i]["en"][0]) == (part == "eval")


def _raw_names(lang: str, seed: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """Given names (male, female) and family names (male, female forms) before the split."""
    if lang == "ur":
        family = list(T.URDU_NAMES["family"])
        return list(T.URDU_NAMES["male"]), list(T.URDU_NAMES["female"]), family, family
    fake = _faker_instance(_FAKER_LOCALES[lang])
    fake.seed_instance(_stable_seed(seed, lang, "faker"))
    n = 400
    first_m = [fake.first_name_male() for _ in range(n)]
    first_f = [fake.first_name_female() for _ in range(n)]
    if lang == "ru":
        last_m = [fake.last_name_male() for _ in range(n)]
        last_f = [fake.last_name_female() for _ in range(n)]
    else:
        last_m = [fake.last_name() for _ in range(n)]
        last_f = last_m

    def clean(values: list[str]) -> list[str]:
        values = [_normalize(v, lang) for v in values]
        return [v for v in values if _clean_name(v.replace("-", "").replace("’", ""), lang)]

    return clean(first_m), clean(first_f), clean(last_m), clean(last_f)


@functools.lru_cache(maxsize=128)
def _pools(lang: str, seed: int, part: str = "train") -> _Pools:
    """Entity pools of ``part``; the two parts of a language share no string (a string that a
    hash would put in both, e.g. a family name that is also a training city, stays in train)."""
    first_m, first_f, last_m, last_f = _raw_names(lang, seed)
    orgs = list(T.ORGANISATIONS[lang])
    extra_cities = list(T.EXTRA_CITIES[lang])
    if lang in _FAKER_ORG_LANGS or lang in _FAKER_CITY_LANGS:
        fake = _faker_instance(_FAKER_LOCALES[lang])
        fake.seed_instance(_stable_seed(seed, lang, "faker-places"))
        if lang in _FAKER_ORG_LANGS:
            values = [_normalize(fake.company(), lang) for _ in range(80)]
            orgs += [o for o in values if _clean_name(o.replace("-", ""), lang)]
        if lang in _FAKER_CITY_LANGS:
            values = [_normalize(fake.city(), lang) for _ in range(60)]
            extra_cities += [c for c in values if _clean_name(c.replace("-", ""), lang)]

    def concepts(which: str) -> tuple[tuple[str, ...], ...]:
        return tuple(city[lang] for i, city in enumerate(T.CITIES) if _city_in_part(i, which))

    def build(which: str) -> _Pools:
        # a string that is also a city concept of the other part never enters this part
        other = {form for city in concepts("train" if which == "eval" else "eval") for form in city}

        def pick(values: Sequence[str]) -> tuple[str, ...]:
            return tuple(v for v in _strings_in_part(values, which) if v not in other)

        def cells(values: Sequence[str]) -> tuple[tuple[str, ...], ...]:
            return tuple(
                tuple(cell.split("|"))
                for cell in _dedupe(values)
                if _held_out_string(cell.split("|")[0]) == (which == "eval")
                and not set(cell.split("|")) & other
            )

        return _Pools(
            first=(pick(first_m), pick(first_f)),
            last=(pick(last_m), pick(last_f)),
            orgs=pick(orgs),
            cities=concepts(which) + cells(extra_cities),
            ambiguous=cells(T.AMBIGUOUS.get(lang, ())),
        )

    train = build("train")
    if part == "train":
        return train
    taken = train.strings()
    held = build("eval")

    def keep(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v for v in values if v not in taken)

    return _Pools(
        first=(keep(held.first[0]), keep(held.first[1])),
        last=(keep(held.last[0]), keep(held.last[1])),
        orgs=keep(held.orgs),
        cities=tuple(c for c in held.cities if not set(c) & taken),
        ambiguous=tuple(a for a in held.ambiguous if not set(a) & taken),
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
@dataclass
class _Slots:
    values: dict[str, tuple[str, ...]]
    gender: str


def _render(template: str, slots: _Slots, lang: str) -> Segments:
    """Fill a template: a list of (text, entity type or None) segments."""
    segs: Segments = []

    def add(text: str, label: str | None) -> None:
        if label is None and segs and segs[-1][1] is None:
            segs[-1] = (segs[-1][0] + text, None)
        elif text:
            segs.append((text, label))

    pos = 0
    for m in _TOKEN_RE.finditer(template):
        add(template[pos : m.start()], None)
        pos = m.end()
        if m.group(1) is not None:
            slot, case = m.group(1), m.group(2) or "nom"
            if slot not in _SLOT_TYPES:
                raise ValueError(f"unknown slot {slot!r} in template {template!r}")
            forms = slots.values[slot]
            text = forms[_CASES[case]] if _CASES[case] < len(forms) else forms[0]
            add(_localize_digits(text, lang), _SLOT_TYPES[slot])
        else:
            add(m.group(3) if slots.gender == "m" else m.group(4), None)
    add(template[pos:], None)
    _FIXES.get(lang, lambda s: None)(segs)
    return segs


def _fix_fr(segs: Segments) -> None:
    """Elision before a vowel: de Athènes -> d'Athènes, que Anne -> qu'Anne, le/la -> l'."""
    for i in range(len(segs) - 1):
        text, label = segs[i]
        if label is None and segs[i + 1][0][:1] in _FR_VOWELS:
            m = _FR_ELIDING.search(text)
            if m:
                word = m.group(1)
                elided = word[:2] + "'" if word.lower() == "que" else word[0] + "'"
                segs[i] = (text[: m.start(1)] + elided, None)


def _fix_es(segs: Segments) -> None:
    """y -> e before a word starting with the sound /i/ (y Inés -> e Inés)."""
    for i in range(len(segs) - 1):
        text, label = segs[i]
        nxt = segs[i + 1][0]
        low = nxt.lower()
        starts_i = low[:1] in "ií" or (
            low[:1] == "h" and low[1:2] in "ií" and low[2:3] not in "aeoáéó"
        )
        if label is None and starts_i and _ES_Y.search(text):
            segs[i] = (text[:-2] + "e ", None)


_FIXES: dict[str, Callable[[Segments], None]] = {"fr": _fix_fr, "es": _fix_es}


def _segments_text(segs: Segments) -> str:
    return "".join(text for text, _ in segs)


def _segments_bio(segs: Segments, lang: str) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    for text, label in segs:
        toks = tokenize(text, lang)
        tokens.extend(toks)
        if label is None:
            tags.extend("O" for _ in toks)
        else:
            tags.extend(f"{'B' if j == 0 else 'I'}-{label}" for j in range(len(toks)))
    return tokens, tags


class _Sampler:
    def __init__(self, lang: str, seed: int, task: str, split: str = "train") -> None:
        self.lang = lang
        self.part = _part(split)
        self.rng = _rng(seed, lang, task, split)
        self.pools = _pools(lang, seed, self.part)
        # composed names ("Bank of Cairo") must not be strings of the other part either
        self.forbidden = _pools(lang, seed, "eval" if self.part == "train" else "train").strings()
        parts = _part_templates(lang, self.part)
        self.ner_templates = parts.ner
        self.ner_empty = parts.ner_empty
        self.org_patterns = parts.org_patterns
        self.nli_items = parts.nli_items
        self.nli_hard = parts.nli_hard
        self.parallel = _parallel_templates(self.part)

    # -- entities ---------------------------------------------------------------------------
    def _family(self, gender: str) -> str:
        if self.lang == "zh":  # a Chinese "family name" slot takes a full name (王芳基金会)
            return self._person(gender)
        return self.rng.choice(self.pools.last[gender == "f"])

    def _person(self, gender: str) -> str:
        first = self.rng.choice(self.pools.first[gender == "f"])
        if self.lang == "zh":
            return self.rng.choice(self.pools.last[0]) + first
        r = self.rng.random()
        if r < 0.15:
            return first
        parts = [first]
        if r > 0.85:  # two given names (three tokens), sometimes two family names (four)
            parts.append(self.rng.choice(self.pools.first[gender == "f"]))
        parts.append(self.rng.choice(self.pools.last[gender == "f"]))
        if r > 0.95:
            parts.append(self.rng.choice(self.pools.last[gender == "f"]))
        return " ".join(dict.fromkeys(parts))

    def _city(self) -> tuple[str, ...]:
        return self.rng.choice(self.pools.cities)

    def _ambiguous(self, kind: str, gender: str) -> tuple[str, ...] | None:
        """A name of another type (or of every type) in this slot: the label comes from the
        context only.  None where the language's grammar or script does not allow it."""
        options: list[Callable[[], tuple[str, ...]]] = []
        names = self.pools.ambiguous
        if names and (kind == "LOC" or self.lang != "ru" or gender == "m"):
            options.append(lambda: self.rng.choice(names)[: 4 if kind == "LOC" else 1])
        if kind == "PER" and self.lang != "zh":
            options.append(lambda: (self._family(gender),))
            if self.lang != "ru":
                options.append(lambda: self._city()[:1])
        elif kind == "LOC" and self.lang not in ("ru", "zh"):
            options.append(lambda: (self._family("m"),))
        elif kind == "ORG":
            options += [lambda: self._city()[:1], lambda: (self._family("m"),)]
        if not options:
            return None
        return self.rng.choice(options)()

    def _nested_org(self) -> str:
        pattern = self.rng.choice(self.org_patterns)
        slots = _Slots(values={"LOC": self._city(), "SUR": (self._family("m"),)}, gender="m")
        return _segments_text(_render(pattern, slots, self.lang))

    def _entity(self, kind: str, gender: str, ambiguous: bool = True) -> tuple[str, ...]:
        while True:
            value = self._entity_once(kind, gender, ambiguous)
            if not set(value) & self.forbidden:
                return value

    def _entity_once(self, kind: str, gender: str, ambiguous: bool = True) -> tuple[str, ...]:
        if (
            ambiguous
            and self.rng.random() < NER_AMBIGUOUS_SHARE
            and (value := self._ambiguous(kind, gender))
        ):
            return value
        if kind == "PER":
            return (self._person(gender),)
        if kind == "LOC":
            return self._city()
        if self.rng.random() < NER_NESTED_SHARE:
            return (self._nested_org(),)
        return (self.rng.choice(self.pools.orgs),)

    def slots(self, ambiguous: bool = True) -> _Slots:
        """Values for every slot; ``ambiguous=False`` keeps names of another type out (NLI:
        a city as a person would only blur who did what, not test context)."""
        values: dict[str, tuple[str, ...]] = {}
        gender = "m" if self.rng.random() < 0.5 else "f"
        used: set[str] = set()  # no string twice in one sentence, whatever its type
        for slot in ("PER", "PER2", "LOC", "LOC2", "ORG", "ORG2"):
            value = self._entity(slot[:3], gender, ambiguous)
            while set(value) & used:
                value = self._entity(slot[:3], "m" if self.rng.random() < 0.5 else "f", ambiguous)
            values[slot] = value
            used.update(value)
        year = self.rng.randint(1950, 2023)
        year2 = self.rng.randint(1940, 2022)
        year2 += year2 >= year  # uniform over 1940..2023 minus {year}
        num = 5 * self.rng.randint(6, 16)
        delta = 5 * self.rng.randint(1, 3)
        values.update(
            YEAR=(str(year),),
            YEAR2=(str(year2),),
            NUM=(str(num),),
            NUMLO=(str(num - delta),),
            NUMHI=(str(num + delta),),
        )
        return _Slots(values=values, gender=gender)

    # -- sentences --------------------------------------------------------------------------
    def ner(self) -> Segments:
        if self.rng.random() < NER_EMPTY_SHARE:
            template = self.rng.choice(self.ner_empty)
        else:
            template = self.rng.choice(self.ner_templates)
        return _render(template, self.slots(), self.lang)

    def nli(self, label: str) -> tuple[str, str, str, str]:
        """(premise, hypothesis, label, kind): kind is ``plain`` or one of NLI_HARD_KINDS."""
        slots = self.slots(ambiguous=False)
        if self.rng.random() < NLI_HARD_SHARE:
            index, item = self.rng.choice(self.nli_hard)
            premise, hypothesis = item[0], item[1 + NLI_LABELS.index(label)]
            kind = T.NLI_HARD_KINDS[index]
        else:
            plain = self.rng.choice(self.nli_items)
            premise, hypothesis = plain["premise"][0], self.rng.choice(plain[label])
            kind = "plain"
        return (
            _segments_text(_render(premise, slots, self.lang)),
            _segments_text(_render(hypothesis, slots, self.lang)),
            label,
            kind,
        )

    def parallel_text(self) -> str:
        template = self.rng.choice(self.parallel)[self.lang]
        i, j = self.rng.sample(_parallel_cities(self.part), 2)
        year = str(self.rng.randint(1950, 2023))
        return _parallel_sentence(template, i, j, year, self.lang)


_FRAME_SLOTS: dict[str, str] = {
    "PER2": "PER",
    "LOC2": "LOC",
    "ORG2": "ORG",
    "YEAR2": "YEAR",
    "NUMLO": "NUM",
    "NUMHI": "NUM",
    "SUR": "PER",
}


@functools.cache
def template_frames(template: str) -> frozenset[str]:
    """The sentence frames of a template, one per gender: slot names with their number, case
    and bound ignored ({LOC2} and {LOC:gen} are {LOC}, {NUMLO} is {NUM}), punctuation,
    spacing and letter case ignored.  Two templates with a frame in common say the same thing
    in the same words, whatever entities they take."""

    def slot(m: re.Match[str], gender: int) -> str:
        if m.group(1) is None:
            return m.group(gender)
        return " \x00" + _FRAME_SLOTS.get(m.group(1), m.group(1)) + "\x00 "

    out = set()
    for gender in (3, 4):
        text = _TOKEN_RE.sub(lambda m, g=gender: slot(m, g), template)
        text = "".join(" " if _is_peelable(c) else c for c in text)
        out.add(" ".join(text.casefold().split()))
    return frozenset(out)


@dataclass(frozen=True)
class _PartTemplates:
    """The templates one part of a language draws on, task by task."""

    ner: tuple[str, ...]
    ner_empty: tuple[str, ...]
    org_patterns: tuple[str, ...]
    nli_items: tuple[dict[str, tuple[str, ...]], ...]
    nli_hard: tuple[tuple[int, tuple[str, str, str, str]], ...]  # (index in NLI_HARD, item)

    def all(self) -> list[str]:
        return [
            *self.ner,
            *self.ner_empty,
            *self.org_patterns,
            *(t for item in self.nli_items for ts in item.values() for t in ts),
            *(t for _, item in self.nli_hard for t in item),
        ]


def _frames_of(templates: Sequence[str]) -> set[str]:
    return {f for t in templates for f in template_frames(t)}


@functools.cache
def training_frames(lang: str) -> frozenset[str]:
    """Every frame of the training part of ``lang``, all tasks together (NER sentences with
    entities and without, organisation patterns, NLI premises and hypotheses, parallel
    sentences; raw text draws on these)."""
    templates = _part_templates(lang, "train").all()
    templates += [t[lang] for t in _in_part(T.PARALLEL_TEMPLATES, "train")]
    return frozenset(_frames_of(templates))


@functools.cache
def _part_templates(lang: str, part: str) -> _PartTemplates:
    """Templates of ``part``: those at held-out positions for ``eval`` (``_held_out_index``,
    ``_held_out_hard``), the others for ``train``.  A held-out template with a frame that the
    training part of any task also has is dropped (a held-out NLI item whose premise is one,
    a held-out NLI_HARD item with any sentence that is one), so the held-out part of every
    task says nothing in words that training said, in any task."""
    hard = tuple(enumerate(T.NLI_HARD[lang]))
    raw = _PartTemplates(
        ner=_in_part(T.NER_TEMPLATES[lang], part),
        ner_empty=_in_part(T.NER_EMPTY[lang], part),
        org_patterns=_in_part(T.ORG_PATTERNS[lang], part),
        nli_items=_in_part(T.NLI_TEMPLATES[lang], part),
        nli_hard=_in_part(hard, part, _held_out_hard),
    )
    if part == "train":
        return raw
    seen = training_frames(lang)

    def new(template: str) -> bool:
        return not template_frames(template) & seen

    items = []
    for item in raw.nli_items:
        if not new(item["premise"][0]):
            continue
        kept = {key: tuple(t for t in ts if new(t)) for key, ts in item.items()}
        if all(kept.values()):
            items.append(kept)
    return _PartTemplates(
        ner=tuple(filter(new, raw.ner)),
        ner_empty=tuple(filter(new, raw.ner_empty)),
        org_patterns=tuple(filter(new, raw.org_patterns)),
        nli_items=tuple(items),
        nli_hard=tuple((i, item) for i, item in raw.nli_hard if all(map(new, item))),
    )


@functools.cache
def _parallel_templates(part: str) -> tuple[dict[str, str], ...]:
    """PARALLEL_TEMPLATES of ``part``; a held-out one with a training frame in any language
    is dropped in all of them (lines stay aligned)."""
    templates = _in_part(T.PARALLEL_TEMPLATES, part)
    if part == "train":
        return templates
    return tuple(
        t
        for t in templates
        if all(not template_frames(t[lang]) & training_frames(lang) for lang in SYNTH_LANGUAGES)
    )


def _held_out_hard(i: int) -> bool:
    """NLI_HARD items come in triples of one phenomenon: the second of each triple is held out
    (the first and third, for training, cover the constructions it turns on)."""
    return i % 3 == 1


@functools.cache
def _parallel_cities(part: str) -> list[int]:
    return [i for i in range(len(T.CITIES)) if _city_in_part(i, part)]


def _parallel_sentence(template: str, i: int, j: int, year: str, lang: str) -> str:
    slots = _Slots(
        values={"LOC": T.CITIES[i][lang], "LOC2": T.CITIES[j][lang], "YEAR": (year,)}, gender="m"
    )
    return _segments_text(_render(template, slots, lang))


# ---------------------------------------------------------------------------------------------
# Public generators
# ---------------------------------------------------------------------------------------------
def synth_ner(
    language: str, size: int, seed: int, split: str = "train"
) -> list[tuple[list[str], list[str]]]:
    """``size`` NER sentences as (tokens, IOB2 tags) from the templates and names of ``split``;
    about NER_EMPTY_SHARE of them have no entity."""
    check_language(language)
    sampler = _Sampler(language, seed, "ner", split)
    return [_segments_bio(sampler.ner(), language) for _ in range(_check_size(size))]


def _nli_rows(language: str, size: int, seed: int, split: str) -> list[tuple[str, str, str, str]]:
    check_language(language)
    sampler = _Sampler(language, seed, "nli", split)
    rows = [sampler.nli(NLI_LABELS[i % 3]) for i in range(_check_size(size))]
    sampler.rng.shuffle(rows)
    return rows


def synth_nli(
    language: str, size: int, seed: int, split: str = "train"
) -> list[tuple[str, str, str]]:
    """``size`` (premise, hypothesis, label) triples, labels cycled then shuffled; about
    NLI_HARD_SHARE of them from NLI_HARD (hypotheses that reuse the premise's words)."""
    return [(p, h, label) for p, h, label, _ in _nli_rows(language, size, seed, split)]


def synth_parallel(
    languages: Sequence[str], size: int, seed: int, split: str = "train"
) -> dict[str, list[str]]:
    """The same ``size`` sentences in every language of ``languages``, aligned by index.

    Template and slot choices depend only on ``seed``, ``split`` and the index, never on the
    language, so separate calls for different languages stay aligned."""
    if isinstance(languages, str):
        languages = [languages]
    for lang in languages:
        check_language(lang)
    _check_size(size)
    contents = parallel_contents(split)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    rng = _rng(seed, "parallel", split)
    rng.shuffle(contents)
    years = list(range(1950, 2024))
    used: dict[int, list[int]] = {}  # content -> its years left, once every content is used
    for k in range(size):
        template, i, j = contents[k % len(contents)]
        # Every content once before any twice, then with a year it has not had: a line
        # that repeats another could be retrieved by neither.
        left = used.setdefault(k % len(contents), rng.sample(years, len(years)))
        year = str(left.pop() if left else rng.choice(years))
        for lang in out:
            out[lang].append(_parallel_sentence(template[lang], i, j, year, lang))
    return out


def parallel_contents(split: str) -> list[tuple[dict[str, str], int, int]]:
    """The distinct (template, city, second city) contents of a part's parallel sentences,
    the second city only for templates that name one: beyond their number, lines of one
    content differ by the year alone."""
    part = _part(split)
    cities = _parallel_cities(part)
    contents = []
    for template in _parallel_templates(part):
        two = "{LOC2}" in template["en"]
        pairs = itertools.permutations(cities, 2) if two else ((i, i) for i in cities)
        contents += [(template, i, j) for i, j in pairs]
    return contents


def synth_text(language: str, size: int, seed: int, split: str = "train") -> list[str]:
    """``size`` raw-text documents of 3 to 6 sentences for masked language modelling: NER- and
    NLI-template sentences, parallel-template sentences and, when ``tokenizerbench`` is
    installed, its real sentences for the language (all from ``split``'s part)."""
    check_language(language)
    sampler = _Sampler(language, seed, "text", split)
    rng = sampler.rng
    real = _in_part(tokenizerbench_sentences(language), sampler.part)
    joiner = "" if language == "zh" else " "
    docs: list[str] = []
    for _ in range(_check_size(size)):
        sentences: list[str] = []
        for _ in range(rng.randint(3, 6)):
            r = rng.random()
            if real and r < 0.2 and (pick := rng.choice(real)) not in sentences:
                sentences.append(pick)
            elif r < 0.55:
                sentences.append(_segments_text(sampler.ner()))
            elif r < 0.85:
                premise, hypothesis, _, _ = sampler.nli(rng.choice(NLI_LABELS))
                sentences.append(premise if rng.random() < 0.5 else hypothesis)
            else:
                sentences.append(sampler.parallel_text())
        docs.append(joiner.join(sentences))
    return docs


def split_counts(language: str, seed: int = 1) -> dict[str, dict[str, int]]:
    """Per part (``train``, ``eval``): how many templates and entity strings it draws from."""
    check_language(language)
    out: dict[str, dict[str, int]] = {}
    for part in ("train", "eval"):
        sampler = _Sampler(language, seed, "counts", "train" if part == "train" else "dev")
        pools = sampler.pools
        out[part] = {
            "ner": len(sampler.ner_templates),
            "ner_empty": len(sampler.ner_empty),
            "org_patterns": len(sampler.org_patterns),
            "nli": len(sampler.nli_items),
            "nli_hard": len(sampler.nli_hard),
            "parallel": len(sampler.parallel),
            "real_sentences": len(_in_part(tokenizerbench_sentences(language), part)),
            "given_names": len(pools.first[0]) + len(pools.first[1]),
            "family_names": len(set(pools.last[0]) | set(pools.last[1])),
            "organisations": len(pools.orgs),
            "cities": len(pools.cities),
            "ambiguous": len(pools.ambiguous),
        }
    return out


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def _json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _lines(task: str, language: str, size: int, seed: int, ext: str, split: str) -> list[str]:
    if task == "ner":
        data = synth_ner(language, size, seed, split)
        if ext == ".jsonl":
            return [_json_line({"tokens": toks, "ner_tags": tags}) for toks, tags in data]
        lines: list[str] = []
        for toks, tags in data:
            lines.extend(f"{tok}\t{tag}" for tok, tag in zip(toks, tags, strict=True))
            lines.append("")
        return lines
    if task == "nli":
        rows = synth_nli(language, size, seed, split)
        if ext == ".jsonl":
            return [_json_line({"premise": p, "hypothesis": h, "label": lab}) for p, h, lab in rows]
        header = "premise\thypothesis\tlabel"
        return [header] + [f"{_one_line(p)}\t{_one_line(h)}\t{lab}" for p, h, lab in rows]
    texts = (
        synth_parallel([language], size, seed, split)[language]
        if task == "parallel"
        else synth_text(language, size, seed, split)
    )
    if ext == ".jsonl":
        return [_json_line({"text": t}) for t in texts]
    return [_one_line(t) for t in texts]


def write_synth(
    task: str, language: str, size: int, seed: int, out: Path, split: str = "train"
) -> Path:
    """Write ``size`` synthetic examples of ``task`` in ``language`` from the templates and
    names of ``split`` (train, dev, test) to ``out`` (atomically); the format follows the
    extension of ``out`` (see the module docstring).  Returns ``out``."""
    if task not in SYNTH_TASKS:
        raise UserError(
            f"synthetic data: unsupported task {task!r}; supported: {', '.join(SYNTH_TASKS)}"
        )
    check_language(language)
    _check_size(size)
    _part(split)
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in SYNTH_EXTENSIONS[task]:
        raise UserError(
            f"synthetic data: cannot write task {task!r} to {out.name!r}; "
            f"supported extensions for {task}: {', '.join(SYNTH_EXTENSIONS[task])}"
        )
    lines = _lines(task, language, size, seed, ext, split)
    write_text(out, "".join(line + "\n" for line in lines))  # atomically, with the umask
    return out


__all__ = [
    "LANGUAGE_SCRIPTS",
    "NER_LABELS",
    "NLI_LABELS",
    "SYNTH_EXTENSIONS",
    "SYNTH_LANGUAGES",
    "SYNTH_TASKS",
    "TEMPLATE_COUNTS",
    "char_script",
    "script_fraction",
    "synth_ner",
    "synth_nli",
    "synth_parallel",
    "synth_text",
    "tokenize",
    "tokenizerbench_sentences",
    "write_synth",
]
