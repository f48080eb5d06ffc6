"""Deterministic synthetic multilingual data, generated offline.

THIS DATA IS SYNTHETIC.  Every sentence comes from a small set of hand-written templates
(see :mod:`polyticket.data.templates` and ``TEMPLATE_COUNTS``) whose slots are filled with
person names from ``faker`` locales (hand lists for Urdu, which faker lacks), hand lists of
real cities and organisations written in each language's own script, and years.  Raw text for
masked language modelling also mixes in the handful of real sentences that the
``tokenizerbench`` package ships for the language.

What it can show:

* that the whole pipeline (tokenisation, label alignment, training, pruning, masks,
  evaluation, reports) runs end to end for every task and language, without a network;
* relative comparisons between masks or pruning methods trained and evaluated on the same
  synthetic data (e.g. how much two languages' tickets overlap);
* cross-lingual / cross-script transfer on a toy task (train on one language, test on another).

What it cannot show:

* absolute scores comparable with WikiANN, XNLI or Wikipedia perplexities: the task is far
  easier (a dozen sentence frames, entities in fixed positions) and scores will saturate;
* real linguistic diversity: vocabulary, syntax, morphology and topics are a tiny, clean
  slice of each language.

Tasks and formats (chosen by the extension of the output file):

* ``ner``: ``.conll`` (``token<TAB>tag``, blank line between sentences) or ``.jsonl``
  (``{"tokens": [...], "ner_tags": [...]}``); BIO tags over PER/LOC/ORG.  Chinese tokens are
  single characters, as in WikiANN.
* ``nli``: ``.tsv`` (header ``premise<TAB>hypothesis<TAB>label``) or ``.jsonl``; labels
  ``entailment``/``neutral``/``contradiction`` cycle (exactly balanced when ``size`` is a
  multiple of 3) and are then shuffled.
* ``parallel``: ``.txt`` (one sentence per line) or ``.jsonl`` (``{"text": ...}``); the
  sentence at line *i* says the same thing in every language for a given ``size`` and
  ``seed`` (same template, same city concepts, same year).
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

SYNTH_LANGUAGES: tuple[str, ...] = T.LANGUAGES
SYNTH_TASKS: tuple[str, ...] = ("ner", "nli", "parallel", "text")
SYNTH_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "ner": (".conll", ".jsonl"),
    "nli": (".tsv", ".jsonl"),
    "parallel": (".txt", ".jsonl"),
    "text": (".txt", ".jsonl"),
}
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
NER_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

#: language -> task -> number of hand-written templates.  ``nli`` counts premises (each with
#: two hypotheses per label); ``text`` counts all the templates its documents draw from.
TEMPLATE_COUNTS: dict[str, dict[str, int]] = {
    lang: {
        "ner": len(T.NER_TEMPLATES[lang]),
        "nli": len(T.NLI_TEMPLATES[lang]),
        "parallel": sum(1 for t in T.PARALLEL_TEMPLATES if lang in t),
        "text": len(T.NER_TEMPLATES[lang])
        + len(T.NLI_TEMPLATES[lang])
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
_FAKER_CITY_LANGS = ("de", "es", "zh", "hi")

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


def _check_language(language: str) -> str:
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
    _check_language(language)
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
    persons: tuple[tuple[str, str], ...]  # (name, gender "m"/"f")
    orgs: tuple[str, ...]
    faker_orgs: tuple[str, ...]
    cities: tuple[tuple[str, ...], ...]  # case forms
    faker_cities: tuple[tuple[str, ...], ...]


def _dedupe(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@functools.lru_cache(maxsize=64)
def _pools(lang: str, seed: int) -> _Pools:
    cities = tuple(city[lang] for city in T.CITIES) + tuple(
        tuple(cell.split("|")) for cell in T.EXTRA_CITIES[lang]
    )
    rng = _rng(seed, lang, "pools")
    persons: list[tuple[str, str]] = []
    faker_orgs: list[str] = []
    faker_cities: list[str] = []
    if lang == "ur":
        for i in range(300):
            gender = "m" if i % 2 == 0 else "f"
            first = rng.choice(T.URDU_NAMES["male" if gender == "m" else "female"])
            name = first if rng.random() < 0.15 else f"{first} {rng.choice(T.URDU_NAMES['family'])}"
            persons.append((name, gender))
    else:
        fake = _faker_instance(_FAKER_LOCALES[lang])
        fake.seed_instance(_stable_seed(seed, lang, "faker"))
        for i in range(300):
            gender = "m" if i % 2 == 0 else "f"
            first = fake.first_name_male() if gender == "m" else fake.first_name_female()
            if lang == "ru":
                last = fake.last_name_male() if gender == "m" else fake.last_name_female()
            else:
                last = fake.last_name()
            first, last = _normalize(first, lang), _normalize(last, lang)
            if lang == "zh":
                name = last + first
            elif rng.random() < 0.15:
                name = first
            else:
                name = f"{first} {last}"
            if _clean_name(name.replace("-", "").replace("’", ""), lang):
                persons.append((name, gender))
        if lang in _FAKER_ORG_LANGS:
            faker_orgs = [_normalize(fake.company(), lang) for _ in range(80)]
            faker_orgs = [o for o in faker_orgs if _clean_name(o.replace("-", ""), lang)]
        if lang in _FAKER_CITY_LANGS:
            faker_cities = [_normalize(fake.city(), lang) for _ in range(60)]
            faker_cities = [c for c in faker_cities if _clean_name(c.replace("-", ""), lang)]
    return _Pools(
        persons=tuple(dict.fromkeys(persons)),
        orgs=T.ORGANISATIONS[lang],
        faker_orgs=_dedupe(faker_orgs),
        cities=cities,
        faker_cities=tuple((c,) for c in _dedupe(faker_cities)),
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
    def __init__(self, lang: str, seed: int, task: str) -> None:
        self.lang = lang
        self.rng = _rng(seed, lang, task)
        self.pools = _pools(lang, seed)

    def _two(self, pool: Sequence, extra: Sequence = (), extra_share: float = 0.0) -> list:
        picks: list = []
        while len(picks) < 2:
            source = extra if extra and self.rng.random() < extra_share else pool
            value = self.rng.choice(source)
            if not picks or value != picks[0]:
                picks.append(value)
        return picks

    def slots(self) -> _Slots:
        p = self.pools
        (per, gender), (per2, _) = self._two(p.persons)
        org, org2 = self._two(p.orgs, p.faker_orgs, 0.4)
        loc, loc2 = self._two(p.cities, p.faker_cities, 0.25)
        year = self.rng.randint(1950, 2023)
        year2 = self.rng.randint(1940, 2022)
        year2 += year2 >= year  # uniform over 1940..2023 minus {year}
        return _Slots(
            values={
                "PER": (per,),
                "PER2": (per2,),
                "ORG": (org,),
                "ORG2": (org2,),
                "LOC": loc,
                "LOC2": loc2,
                "YEAR": (str(year),),
                "YEAR2": (str(year2),),
            },
            gender=gender,
        )

    def ner(self) -> Segments:
        template = self.rng.choice(T.NER_TEMPLATES[self.lang])
        return _render(template, self.slots(), self.lang)

    def nli(self, label: str) -> tuple[str, str, str]:
        item = self.rng.choice(T.NLI_TEMPLATES[self.lang])
        slots = self.slots()
        premise = _segments_text(_render(item["premise"][0], slots, self.lang))
        hypothesis = _segments_text(_render(self.rng.choice(item[label]), slots, self.lang))
        return premise, hypothesis, label

    def parallel_text(self) -> str:
        template = self.rng.choice(T.PARALLEL_TEMPLATES)[self.lang]
        return _segments_text(_render(template, _parallel_slots(self.rng, self.lang), self.lang))


def _parallel_slots(rng: random.Random, lang: str) -> _Slots:
    i, j = rng.sample(range(len(T.CITIES)), 2)
    year = str(rng.randint(1950, 2023))
    return _Slots(
        values={"LOC": T.CITIES[i][lang], "LOC2": T.CITIES[j][lang], "YEAR": (year,)},
        gender="m",
    )


# ---------------------------------------------------------------------------------------------
# Public generators
# ---------------------------------------------------------------------------------------------
def synth_ner(language: str, size: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``size`` NER sentences as (tokens, BIO tags); every sentence has at least one entity."""
    _check_language(language)
    sampler = _Sampler(language, seed, "ner")
    return [_segments_bio(sampler.ner(), language) for _ in range(_check_size(size))]


def synth_nli(language: str, size: int, seed: int) -> list[tuple[str, str, str]]:
    """``size`` (premise, hypothesis, label) triples, labels cycled then shuffled."""
    _check_language(language)
    sampler = _Sampler(language, seed, "nli")
    rows = [sampler.nli(NLI_LABELS[i % 3]) for i in range(_check_size(size))]
    sampler.rng.shuffle(rows)
    return rows


def synth_parallel(languages: Sequence[str], size: int, seed: int) -> dict[str, list[str]]:
    """The same ``size`` sentences in every language of ``languages``, aligned by index.

    Template and slot choices depend only on ``seed`` and the index, never on the language,
    so separate calls for different languages stay aligned."""
    if isinstance(languages, str):
        languages = [languages]
    for lang in languages:
        _check_language(lang)
    _check_size(size)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    rng = _rng(seed, "parallel")
    for _ in range(size):
        k = rng.randrange(len(T.PARALLEL_TEMPLATES))
        i, j = rng.sample(range(len(T.CITIES)), 2)
        year = str(rng.randint(1950, 2023))
        for lang in out:
            slots = _Slots(
                values={"LOC": T.CITIES[i][lang], "LOC2": T.CITIES[j][lang], "YEAR": (year,)},
                gender="m",
            )
            out[lang].append(_segments_text(_render(T.PARALLEL_TEMPLATES[k][lang], slots, lang)))
    return out


def synth_text(language: str, size: int, seed: int) -> list[str]:
    """``size`` raw-text documents of 3 to 6 sentences for masked language modelling: NER- and
    NLI-template sentences, parallel-template sentences and, when ``tokenizerbench`` is
    installed, its real sentences for the language."""
    _check_language(language)
    sampler = _Sampler(language, seed, "text")
    rng = sampler.rng
    real = tokenizerbench_sentences(language)
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
                premise, hypothesis, _ = sampler.nli(rng.choice(NLI_LABELS))
                sentences.append(premise if rng.random() < 0.5 else hypothesis)
            else:
                sentences.append(sampler.parallel_text())
        docs.append(joiner.join(sentences))
    return docs


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def _json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _lines(task: str, language: str, size: int, seed: int, ext: str) -> list[str]:
    if task == "ner":
        data = synth_ner(language, size, seed)
        if ext == ".jsonl":
            return [_json_line({"tokens": toks, "ner_tags": tags}) for toks, tags in data]
        lines: list[str] = []
        for toks, tags in data:
            lines.extend(f"{tok}\t{tag}" for tok, tag in zip(toks, tags, strict=True))
            lines.append("")
        return lines
    if task == "nli":
        rows = synth_nli(language, size, seed)
        if ext == ".jsonl":
            return [_json_line({"premise": p, "hypothesis": h, "label": lab}) for p, h, lab in rows]
        header = "premise\thypothesis\tlabel"
        return [header] + [f"{_one_line(p)}\t{_one_line(h)}\t{lab}" for p, h, lab in rows]
    texts = (
        synth_parallel([language], size, seed)[language]
        if task == "parallel"
        else synth_text(language, size, seed)
    )
    if ext == ".jsonl":
        return [_json_line({"text": t}) for t in texts]
    return [_one_line(t) for t in texts]


def _atomic_write(out: Path, content: str) -> None:
    # polyticket.io: a unique temporary name, renamed into place, with the user's umask
    # (mkstemp alone left the data 0600, unreadable to colleagues sharing a study).
    write_text(out, content)


def write_synth(task: str, language: str, size: int, seed: int, out: Path) -> Path:
    """Write ``size`` synthetic examples of ``task`` in ``language`` to ``out`` (atomically);
    the format follows the extension of ``out`` (see the module docstring).  Returns ``out``."""
    if task not in SYNTH_TASKS:
        raise UserError(
            f"synthetic data: unsupported task {task!r}; supported: {', '.join(SYNTH_TASKS)}"
        )
    _check_language(language)
    _check_size(size)
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in SYNTH_EXTENSIONS[task]:
        raise UserError(
            f"synthetic data: cannot write task {task!r} to {out.name!r}; "
            f"supported extensions for {task}: {', '.join(SYNTH_EXTENSIONS[task])}"
        )
    lines = _lines(task, language, size, seed, ext)
    _atomic_write(out, "".join(line + "\n" for line in lines))
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
