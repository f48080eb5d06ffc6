"""The study report (issue 11.7): a tiny study's page renders in headless Chromium with every
section, and every figure is there and not blank, in the DOM and on the screenshot."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_study import LANGS, write_study

from polyticket.analysis.report import SECTIONS, build, write_report
from polyticket.analysis.results import headline_text
from polyticket.cli import main

SECTION_IDS = [
    "headline",
    "score-vs-sparsity",
    "overlap-by-layer",
    "overlap-by-component",
    "overlap-beyond-theta0",
    "transfer",
    "transfer-drop",
    "retrieval",
    "similarity",
    "dendrogram",
    "core",
    "finders",
]
# One task at one sparsity: a figure of each kind (overlap per layer and per component in
# both measures), three of similarity (svcca, pwcca, cka).
FIGURES = sorted(
    [
        "score-ner",
        "overlap-layer-ner-s50",
        "overlap-component-ner-s50",
        "overlap-head-ner-s50",
        "beyond-theta0-ner-s50",
        "beyond-theta0-layer-ner-s50",
        "beyond-theta0-component-ner-s50",
        "transfer-ner-s50",
        "transfer-drop-ner",
        "retrieval",
        "similarity-svcca",
        "similarity-pwcca",
        "similarity-cka",
        "dendrogram-ner-s50",
        "core-layers-ner-s50",
    ]
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",  # so that CSS pixels are screenshot pixels
    "--virtual-time-budget=10000",  # let the probe's load handler run before the dump
]
# Run on the page's load: where every figure and section is, and whether its image decoded.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const probe = {
    height: document.documentElement.scrollHeight,
    sections: [...document.querySelectorAll("section")].map(s => s.id),
    figures: [...document.querySelectorAll("figure img")].map(img => ({
      id: img.parentElement.id, complete: img.complete, width: img.naturalWidth,
      height: img.naturalHeight, box: box(img)})),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed here when missing (root and the Debian archive needed)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed, and installing it (apt-get) needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    errors = ""
    for commands in ([install], [["apt-get", "update", "-q"], install]):
        try:
            for command in commands:
                subprocess.run(command, env=env, check=True, capture_output=True, timeout=1200)
        except (OSError, subprocess.SubprocessError) as exc:
            errors = str(getattr(exc, "stderr", b"") or exc)[-300:]
            continue
        if found := shutil.which("chromium"):
            return found
    pytest.skip(f"chromium could not be installed with apt-get: {errors}")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, bert_dir) -> Path:
    """One seed, three languages, every kind of cell of two steps (30 cells); retrieval and
    similarity tables as the representation analyses write them (their numbers made up, their
    masks named as a study exports them, without the task column of a study's tables)."""
    root = tmp_path_factory.mktemp("report")
    settings = {"max_steps": 2, "batch_size": 16, "learning_rate": 0.002, "rate": 0.5}
    path = write_study(
        root,
        bert_dir,
        root / "run",
        seeds=[1],
        settings={**settings, "eval_steps": 2},
        run={"oneshot": True, "core": True, "methods": ["wanda"]},
    )
    assert main(["study", str(path)]) == 0
    results = root / "run" / "results"
    rng = np.random.default_rng(0)
    retrieval = ["mask,src,tgt,layer,accuracy"] + [
        f"{mask},en,{tgt},{layer},{rng.uniform(0.2, 0.9):.3f}"
        for mask in ("dense", "en/seed1/s50", "fr/seed1/s50", "random/seed1/s50")
        for tgt in LANGS[1:]
        for layer in range(3)
    ]
    (results / "retrieval.csv").write_text("\n".join(retrieval) + "\n")
    similarity = ["mask,comparison,languages,layer,measure,value"] + [
        f"{lang}/seed1/s50,{comparison},{languages},{layer},{measure},{rng.uniform(0.3, 1.0):.3f}"
        for lang in LANGS
        for comparison, languages in (("dense", lang), ("cross-lingual", f'"{lang},en"'))
        for layer in range(3)
        for measure in ("svcca", "pwcca", "cka")
    ]
    (results / "similarity.csv").write_text("\n".join(similarity) + "\n")
    return root / "run"


class _Images(HTMLParser):
    """The ``src`` of every ``<img>`` and the ``href``/``src`` of anything else."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif "src" in attrs or "href" in attrs:
            self.links.append(attrs.get("src") or attrs.get("href") or "")


def _decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    data = base64.b64decode(uri[len(prefix) :])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(data), format="png")


def _not_blank(pixels: np.ndarray) -> bool:
    """More than one colour, and more than a sliver of the area away from the background."""
    grey = pixels[..., :3].mean(axis=-1)
    return float(grey.std()) > 0.02 and float((np.abs(grey - np.median(grey)) > 0.1).mean()) > 0.01


def _chromium(binary: str, tmp: Path, *args: str) -> str:
    result = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_of_a_tiny_study_renders_in_chromium_with_every_section(
    study_dir, chromium, tmp_path, capsys
):
    assert main(["report", str(study_dir)]) == 0
    index = study_dir / "report" / "index.html"
    assert f"written: {index}" in capsys.readouterr().out
    page = index.read_text(encoding="utf-8")
    assert 'class="missing"' not in page, re.findall(r'class="missing">([^<]*)', page)

    # The page alone, no network: every image inline, nothing else fetched.
    parsed = _Images()
    parsed.feed(page)
    assert all(link.startswith("#") for link in parsed.links), parsed.links
    pngs = sorted((study_dir / "report").glob("*.png"))
    assert [p.stem for p in pngs] == FIGURES
    assert len(parsed.images) == len(pngs)
    for uri in parsed.images:
        assert _not_blank(_decode_png(uri))
    summary = (study_dir / "report" / "summary.md").read_text(encoding="utf-8")
    assert "Do tickets of different languages overlap more than random masks?" in summary
    assert all(f"]({png.name})" in summary for png in pngs)

    # Rendered: the DOM after load (with the probe's measurements), then the screenshot of
    # the whole page, cut at every figure's box.
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(
        chromium, tmp_path, "--window-size=1280,2000", "--dump-dom", probe_page.as_uri()
    )
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1))
    assert probe["sections"] == SECTION_IDS and len(SECTIONS) == len(SECTION_IDS)
    assert len(probe["figures"]) == len(pngs)
    for figure in probe["figures"]:
        assert figure["complete"] and figure["width"] > 100 and figure["height"] > 100, figure
    screenshot = tmp_path / "page.png"
    height = min(int(probe["height"]) + 10, 16000)
    _chromium(
        chromium,
        tmp_path,
        f"--window-size=1280,{height}",
        f"--screenshot={screenshot}",
        probe_page.as_uri(),
    )
    shot = imread(screenshot)
    assert _not_blank(shot)
    for figure in probe["figures"]:
        box = figure["box"]
        if box["y"] + box["height"] > shot.shape[0]:
            continue  # below what one screenshot holds (only for very long reports)
        crop = shot[
            int(box["y"]) : int(box["y"] + box["height"]),
            int(box["x"]) : int(box["x"] + box["width"]),
        ]
        assert crop.size and _not_blank(crop), figure["id"]


def test_a_section_without_data_says_so(tmp_path):
    """An empty study directory: every section is there, saying what would fill it."""
    index = write_report(tmp_path).index
    page = index.read_text(encoding="utf-8")
    for key in SECTION_IDS:
        section = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
        assert section and 'class="missing">No data' in section.group(1), key
    assert "<img" not in page
    assert main(["report", str(tmp_path / "absent")]) == 2


def _legend_colours(figure) -> dict[str, tuple]:
    """Each legend entry's line colour, over every axes of a figure."""
    from matplotlib.colors import to_rgba

    colours = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            line = handle.lines[0] if hasattr(handle, "lines") else handle
            colours[label] = to_rgba(line.get_color())
    return colours


def test_the_figures_draw_what_tells_languages_apart(study_dir):
    """Beyond θ0 per block, component and head (the plain Jaccard of tickets is mostly
    θ0's); languages clustered by it; the core per component; a language has one colour in
    every figure; the references are grey; the component colours span the language pairs,
    not the random row."""
    results = json.loads((study_dir / "results" / "results.json").read_text())
    assert results["overlap"][0]["clusters"]["measure"] == "beyond_theta0"
    sections = {section.key: section for section in build(study_dir)}
    parts = {
        part.name: part
        for section in sections.values()
        for part in section.parts
        if hasattr(part, "figure")
    }
    headline = [getattr(p, "text", "") for p in sections["headline"].parts]
    assert not any("results.json was written" in t for t in headline)  # this version's
    core_tables = [p.caption for p in sections["core"].parts if hasattr(p, "rows")]
    assert any("weights kept per component" in caption for caption in core_tables)
    head = parts["overlap-head-ner-s50"].figure
    assert "beyond θ0" in head.axes[0].get_title()
    score = _legend_colours(parts["score-ner"].figure)
    retrieval = _legend_colours(parts["retrieval"].figure)
    similarity = _legend_colours(parts["similarity-svcca"].figure)
    for language in ("en", "fr"):
        assert score[language] == retrieval[f"{language} ticket, 50%"]
        assert score[language] == similarity[f"{language} ticket, 50%"]
    assert score["en"] != score["fr"]
    for label in ("dense", "random mask, 50%"):
        red, green, blue, _ = retrieval[label]
        assert red == green == blue, label  # grey or black
    component = parts["beyond-theta0-component-ner-s50"].figure.axes[0]
    pairs = np.array(component.images[0].get_array())[:3]  # en–fr, en–de, fr–de
    norm = component.images[0].norm
    assert (norm.vmin, norm.vmax) == (pytest.approx(pairs.min()), pytest.approx(pairs.max()))
    assert [t.get_text() for t in component.get_yticklabels()][:3] == ["en–fr", "en–de", "fr–de"]


def test_representation_figures_keep_tasks_apart(tmp_path):
    """A study's representation tables have a task column: a figure per task, never the
    two tasks' masks of the same name averaged together."""
    results = tmp_path / "results"
    results.mkdir()
    rows = ["task,mask,src,tgt,layer,accuracy"] + [
        f"{task},{mask},en,fr,{layer},{value}"
        for task, value in (("ner", 0.2), ("nli", 0.8))
        for mask in ("dense", "en/seed1/s50")
        for layer in range(3)
    ]
    (results / "retrieval.csv").write_text("\n".join(rows) + "\n")
    section = next(s for s in build(tmp_path) if s.key == "retrieval")
    plotted = {part.name: part.figure for part in section.parts}
    assert sorted(plotted) == ["retrieval-ner", "retrieval-nli"]
    for name, value in (("retrieval-ner", 0.2), ("retrieval-nli", 0.8)):
        ax = plotted[name].axes[0]
        for handle in ax.get_legend_handles_labels()[0]:
            assert list(handle.lines[0].get_ydata()) == [value] * 3, name


def test_a_reference_looks_the_same_in_every_figure(tmp_path):
    """The random mask had one marker in the retrieval figure and another in the SVCCA one
    (reference styles went by order of appearance, and only the former has the dense model)."""
    results = tmp_path / "results"
    results.mkdir()
    masks = ("en/seed1/s50", "random/seed1/s50", "oneshot/s50")
    retrieval = ["mask,src,tgt,layer,accuracy"] + [
        f"{mask},en,fr,{layer},0.5" for mask in ("dense", *masks) for layer in range(3)
    ]
    similarity = ["mask,comparison,languages,layer,measure,value"] + [
        f"{mask},dense,en,{layer},svcca,0.9" for mask in masks for layer in range(3)
    ]
    (results / "retrieval.csv").write_text("\n".join(retrieval) + "\n")
    (results / "similarity.csv").write_text("\n".join(similarity) + "\n")
    markers: dict[str, set[str]] = {}
    figures = [p.figure for s in build(tmp_path) if s.key in ("retrieval", "similarity")
               for p in s.parts]  # fmt: skip
    assert len(figures) == 2
    for figure in figures:
        for ax in figure.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label.startswith(("random", "one-shot")):
                    markers.setdefault(label, set()).add(handle.lines[0].get_marker())
    assert set(markers) == {"random mask, 50%", "one-shot θ0 mask, 50%"}
    assert all(len(found) == 1 for found in markers.values()), markers
    # the references of a figure with many (earlier levels pruned further) stay apart
    from polyticket.analysis import plots

    rows = [("dense", 0), ("random", 1), ("oneshot", 2)] + [(f"s{k}", None) for k in range(5)]
    series = [plots.Series(r, [0], [0], reference=True, style=i) for r, i in rows]
    styles = plots._styles([series])
    assert len({(v["marker"], v["linestyle"], v["color"]) for v in styles.values()}) == 8
    # two series of one language (its NER and NLI tickets) keep its colour, and differ
    series = [plots.Series(label, [0], [0], style=1) for label in ("ner: en", "nli: en")]
    first, second = plots._styles([series]).values()
    assert first["color"] == second["color"]
    assert first["marker"] != second["marker"] and first["linestyle"] != second["linestyle"]


def test_representation_curves_show_the_spread_over_seeds(tmp_path):
    """Each seed's mean over language pairs, then their mean and standard deviation."""
    results = tmp_path / "results"
    results.mkdir()
    rows = ["mask,src,tgt,layer,accuracy"] + [
        f"{mask},{src},{tgt},{layer},{value}"
        for mask, values in (
            ("dense", (0.5, 0.5)),
            ("en/seed1/s50", (0.2, 0.4)),
            ("en/seed2/s50", (0.6, 0.8)),
        )  # fmt: skip
        for (src, tgt), value in zip((("en", "fr"), ("fr", "en")), values, strict=True)
        for layer in range(2)
    ]
    (results / "retrieval.csv").write_text("\n".join(rows) + "\n")
    (figure,) = [p.figure for s in build(tmp_path) if s.key == "retrieval" for p in s.parts]
    handles = dict(zip(*reversed(figure.axes[0].get_legend_handles_labels()), strict=True))
    ticket = handles["en ticket, 50%"]
    assert list(ticket.lines[0].get_ydata()) == pytest.approx([0.5, 0.5])
    (bars,) = ticket.lines[2]
    spread = [segment[1][1] - segment[0][1] for segment in bars.get_segments()]
    assert spread == pytest.approx([2 * math.sqrt(0.08)] * 2)  # ± the std of 0.3 and 0.7
    assert not handles["dense"].has_yerr  # one "seed": no bars


def test_retrieve_on_a_studys_exported_masks_is_drawn_as_the_study_cell(tmp_path):
    """`polyticket retrieve --masks STUDY` labels masks by their exported paths."""
    results = tmp_path / "results"
    results.mkdir()
    masks = ("dense", "ner/en/seed1/s50", "ner/en/seed1/oneshot-s50", "nli/en/seed1/s50",
             "ner/en/seed1/study-ticket")  # fmt: skip
    rows = ["mask,src,tgt,layer,accuracy"] + [
        f"{mask},en,fr,{layer},0.5" for mask in masks for layer in range(2)
    ]
    (results / "retrieval.csv").write_text("\n".join(rows) + "\n")
    (figure,) = [p.figure for s in build(tmp_path) if s.key == "retrieval" for p in s.parts]
    handles = dict(zip(*reversed(figure.axes[0].get_legend_handles_labels()), strict=True))
    assert set(handles) == {
        "dense", "ner: en ticket, 50%", "ner: one-shot θ0 mask, 50%", "nli: en ticket, 50%",
        "ner: en study ticket",
    }  # fmt: skip
    grey = {label for label, h in handles.items() if h.lines[0].get_linewidth() < 2}
    assert grey == {"dense", "ner: one-shot θ0 mask, 50%"}  # references are thin and grey


def test_headline_leads_with_the_overlap_beyond_theta0():
    line = {
        "task": "ner",
        "sparsity": 0.5,
        "metric": "f1",
        "greater_is_better": True,
        "overlap_between_languages": 0.979,
        "overlap_random": 0.333,
        "overlap_same_language": math.nan,
        "overlap_oneshot": 0.982,
        "overlap_beyond_theta0": 0.274,
        "overlap_beyond_theta0_random": 0.005,
        "transfer_score": 0.6,
        "random_score": 0.0,
        "oneshot_score": 0.05,
        "dense_score": 0.37,
    }
    text = headline_text(line).splitlines()
    assert "Did training move different languages to the same weights" in text[1]
    assert "Jaccard 0.274 vs 0.005 at random" in text[1]
    assert "0.982 with the one-shot mask of θ0 (no more than θ0's magnitudes" in text[2]
    higher = headline_text({**line, "overlap_between_languages": 0.99})
    assert "no more than" not in higher
    alone = headline_text({**line, "languages": 1}).splitlines()
    assert alone[1:] == ["  One language: the questions about languages need two or more."]
    one_seed = headline_text({**line, "overlap_one_seed": True})
    assert "Every pair of languages above shares the study's one seed" in one_seed
    assert "shares the study's one seed" not in "\n".join(text)
    seeds = {
        "overlap_beyond_theta0_same_seed": 0.69,
        "overlap_same_seed": 0.985,
        "overlap_beyond_theta0_same_language": 0.25,
    }
    apart = headline_text({**line, **seeds}).splitlines()
    assert apart[1].endswith(
        "Jaccard 0.274 vs 0.005 at random (pairs of other seeds; 0.690 for pairs of one seed), "
        "0.250 between seeds of a language"
    )
    assert "(pairs of other seeds; 0.985 for pairs of one seed)" in apart[2]


@pytest.mark.parametrize(
    "transfer, seeds, spread, verdict",
    [
        (0.60, 3, 0.05, "yes, by 0.100 (twice the seeds' standard error: 0.082)"),
        (0.55, 3, 0.05, "not clearly: ahead by 0.050, within twice the seeds' standard error"),
        (0.55, 1, math.nan, "yes, by 0.050 (one seed: no spread to judge the margin by)"),
        (0.45, 3, 0.05, "not clearly: behind by 0.050, within twice the seeds' standard"),
        (0.30, 3, 0.05, "no, by 0.200 (twice the seeds' standard error: 0.082)"),
        (0.45, 1, math.nan, "no, by 0.050 (one seed: no spread to judge the margin by)"),
    ],
)
def test_transferred_tickets_beat_random_masks_only_beyond_the_seeds_spread(
    transfer, seeds, spread, verdict
):
    line = {
        "task": "nli",
        "sparsity": 0.5,
        "metric": "accuracy",
        "greater_is_better": True,
        **dict.fromkeys(
            ["overlap_between_languages", "overlap_random", "overlap_same_language"], math.nan
        ),
        **dict.fromkeys(["overlap_oneshot", "overlap_beyond_theta0"], math.nan),
        "overlap_beyond_theta0_random": math.nan,
        "transfer_score": transfer,
        "random_score": 0.5,
        "oneshot_score": math.nan,
        "dense_score": 0.8,
        "score_seeds": seeds,
        "score_seed_std": spread,
    }
    answer = headline_text(line).splitlines()[-1]
    assert f"Do transferred tickets beat random masks? {verdict}" in answer
    lower = {**line, "greater_is_better": False, "transfer_score": 1 - transfer}
    assert verdict.split(":")[0] in headline_text(lower).splitlines()[-1]


def test_the_headline_takes_the_seeds_spread_from_the_transfer_matrix():
    from polyticket.analysis.results import headline

    def grid(en, fr):
        return {"en": en, "fr": fr}

    matrix = {
        "task": "ner",
        "sparsity": 0.5,
        "metric": "f1",
        "greater_is_better": True,
        "targets": ["en", "fr"],
        "rows": ["en", "fr", "dense", "random"],
        "mean": {
            "en": grid(0.8, 0.6),
            "fr": grid(0.7, 0.9),
            "dense": grid(0.9, 0.9),
            "random": grid(0.2, math.nan),
        },
        "std": {
            "en": grid(0.01, 0.03),
            "fr": grid(0.02, 0.01),
            "dense": grid(0.0, 0.0),
            "random": grid(0.05, math.nan),
        },
        "n": {"en": grid(2, 2), "fr": grid(3, 2), "dense": grid(2, 2), "random": grid(2, 0)},
    }
    line = headline(matrix, {"summary": {}}, 2)
    # the off-diagonal sources (en→fr, fr→en) and the random row's one known target
    assert line["transfer_score"] == pytest.approx(0.65) and line["random_score"] == 0.2
    assert line["score_seeds"] == 2
    assert line["score_seed_std"] == pytest.approx((0.03 + 0.02 + 0.05) / 3)
    from polyticket.analysis.results import headline_text

    assert "twice the seeds' standard error" in headline_text(line)
    # a study of three seeds, some cells with two (one failed, or not run yet): no verdict
    # as if the means were whole, nor a "one seed" one
    text = headline_text(headline(matrix, {"summary": {}}, 3))
    assert "yes so far, by 0.450 (some cells have 2 of the study's 3 seeds" in text
    assert "standard error" not in text and "one seed" not in text


def test_tickets_far_ahead_of_their_dense_model_are_called_out(tmp_path):
    """The demo's budget leaves the dense model unconverged: the page must say so where the
    headline and the scores are read, not let the tickets look like a finding."""
    results = tmp_path / "results"
    results.mkdir()

    def ticket(language, score, dense):
        fixed = {"task": "ner", "seed": 1, "level": 1, "sparsity": 0.5, "random_score": 0.0}
        fixed["epsilon"] = 0.01
        return {**fixed, "language": language, "score": score, "dense_score": dense}

    tickets = [ticket("en", 0.92, 0.37), ticket("fr", 0.80, 0.78), ticket("de", None, 0.5)]
    (results / "results.json").write_text(json.dumps({"tickets": tickets}))
    sections = {section.key: section for section in build(tmp_path)}
    for key in ("headline", "score-vs-sparsity"):
        notes = [p.text for p in sections[key].parts if "by far" in getattr(p, "text", "")]
        assert len(notes) == 1, key
        assert "(en seed 1: 0.920 vs dense 0.370)" in notes[0]  # not fr, within; not de
        assert "had not converged" in notes[0]
    tickets[0]["score"] = 0.45
    (results / "results.json").write_text(json.dumps({"tickets": tickets}))
    assert not any("by far" in getattr(p, "text", "") for s in build(tmp_path) for p in s.parts)


def test_legends_leave_error_bars_alone():
    """matplotlib's best place avoids a line's points but not its bars: legends go below."""
    from polyticket.analysis import plots

    def legend_below(series):
        figure = plots.lines("t", "x", "y", series)
        return figure.axes[0].get_legend().get_bbox_to_anchor().y1 < figure.axes[0].bbox.y0

    flat = [plots.Series(k, [0, 1], [0.5, 0.6]) for k in ("en", "fr")]
    assert not legend_below(flat)
    spread = [plots.Series(k, [0, 1], [0.5, 0.6], err=[0.1, 0.2]) for k in ("en", "fr")]
    assert legend_below(spread)
    one_seed = [plots.Series(k, [0, 1], [0.5, 0.6], err=[0.0, 0.0]) for k in ("en", "fr")]
    assert not legend_below(one_seed)


def test_cells_left_out_and_cross_task_transfers_are_on_the_page(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    problems = [{"cell": f"ner/l{i}/seed1/imp", "problem": "failed"} for i in range(7)]
    cross = [
        {"source_task": "nli", "task": "ner", "language": "en", "seed": 1, "sparsity": 0.5,
         "score": 0.61, "own_ticket_score": 0.7, "random_score": None}
    ]  # fmt: skip
    references_only = [  # run.transfer off: only the reference rows have a drop
        {"task": "ner", "sparsity": 0.5, "source": source, "relative_drop": -0.5}
        for source in ("dense", "oneshot")
    ]
    (results / "results.json").write_text(
        json.dumps({"problems": problems, "cross_task": cross, "transfer_drop": references_only})
    )
    sections = {section.key: section for section in build(tmp_path)}
    texts = [getattr(p, "text", "") for p in sections["headline"].parts]
    assert any(
        t.startswith("results.json was written by polyticket a version before") for t in texts
    )
    left_out = next(t for t in texts if "left out" in t)
    assert left_out.startswith("7 cell(s) are left out of every table and figure below")
    assert "ner/l0/seed1/imp: failed" in left_out and "and 2 more" in left_out
    assert not any(hasattr(p, "figure") for p in sections["transfer-drop"].parts)
    table = next(p for p in sections["transfer"].parts if hasattr(p, "rows"))
    assert table.rows == [["nli", "ner", "en", "1", "50%", "0.610", "0.700", "–"]]


def test_the_finders_table_shows_every_target_sparsity_and_a_spread_over_seeds(tmp_path):
    """62.5% is a target sparsity too (rate 0.125); the ± shows with two seeds or more."""
    from polyticket.analysis.report import StudyFiles, finders_section
    from polyticket.layout import StudyLayout

    row = {"task": "ner", "method": "wanda", "language": "en", "seeds": 2}
    for tag, score in (("s50", 0.8), ("s62.5", 0.7)):
        row |= {f"score_{tag}": score, f"score_{tag}_std": 0.02, f"jaccard_{tag}": 0.9,
                f"steps_{tag}": 0, f"diff_{tag}": -0.01, f"diff_{tag}_se": 0.005}  # fmt: skip
    files = StudyFiles(StudyLayout(tmp_path), {"methods_mean": [row]}, [], [])
    (table,) = finders_section(files).parts
    assert table.header[3:] == [
        "score 50%", "J to IMP 50%", "steps 50%", "vs IMP 50%",
        "score 62.5%", "J to IMP 62.5%", "steps 62.5%", "vs IMP 62.5%", "goal",
    ]  # fmt: skip
    assert table.rows == [
        ["wanda", "en", "2", "0.800 ± 0.020", "0.900", "0", "-0.010 ± 0.005",
         "0.700 ± 0.020", "0.900", "0", "-0.010 ± 0.005", "–"],
    ]  # fmt: skip


def test_a_transfer_mean_over_fewer_seeds_says_so(tmp_path):
    """A failed or pending cell leaves a mean over fewer of the study's seeds: the page and
    the summary say how many, rather than show it beside the whole means as one of them."""
    from polyticket.analysis.results import format_summary

    results = tmp_path / "results"
    results.mkdir()
    matrix = {
        "task": "ner", "sparsity": 0.5, "metric": "f1", "greater_is_better": True,
        "targets": ["en", "fr"], "rows": ["en", "fr"], "seeds": 2,
        "mean": {"en": {"en": 0.8, "fr": 0.5}, "fr": {"en": 0.6, "fr": 0.9}},
        "std": {"en": {"en": 0.01, "fr": 0.0}, "fr": {"en": 0.02, "fr": 0.03}},
        "n": {"en": {"en": 2, "fr": 1}, "fr": {"en": 2, "fr": 2}},
    }  # fmt: skip
    (results / "results.json").write_text(json.dumps({"transfer": [matrix]}))
    sections = {section.key: section for section in build(tmp_path)}
    table = next(p for p in sections["transfer"].parts if hasattr(p, "rows"))
    assert table.rows[0] == ["en", "0.800 ±0.010", "0.500 (1 of 2 seeds)"]
    assert table.rows[1] == ["fr", "0.600 ±0.020", "0.900 ±0.030"]
    summary = format_summary({"transfer": [matrix], "tickets": [], "headline": []})
    assert "0.500*" in summary and "0.800*" not in summary
    assert "(* a mean over fewer than the study's 2 seeds so far)" in summary


def test_a_level_not_every_seed_has_reached_is_not_drawn(tmp_path):
    """Seed 2 still at level 0: the curve stops there, rather than put seed 1's level 1
    alone on a curve of means."""
    from polyticket.analysis.report import StudyFiles, level_scores

    for seed, scores in ((1, [0.8, 0.7]), (2, [0.6])):
        for k, score in enumerate(scores):
            level = tmp_path / f"cells/ner/en/seed{seed}/imp/level_{k:02d}"
            level.mkdir(parents=True)
            (level / "metrics.json").write_text(
                json.dumps({"metric": "f1", "sparsity": 0.5 * k, "best_score": score})
            )
    files = StudyFiles.read(tmp_path)
    points, metric = level_scores(files, "ner", "en", [1, 2])
    assert metric == "f1" and len(points) == 1
    assert points[0][:2] == (0.0, pytest.approx(0.7))


def test_series_without_a_language_take_no_languages_style(study_dir):
    """A language keeps its colour in every figure: its residue in the core figure has it,
    and the mean over pairs of languages does not borrow the first language's."""
    sections = {s.key: s for s in build(study_dir)}

    def colours(section: str) -> dict[str, tuple]:
        found = {}
        for part in sections[section].parts:
            for ax in getattr(getattr(part, "figure", None), "axes", []):
                for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                    line = handle.lines[0] if hasattr(handle, "lines") else handle
                    found[label] = tuple(line.get_color()) if not isinstance(
                        line.get_color(), str) else line.get_color()  # fmt: skip
        return found

    score = colours("score-vs-sparsity")
    core = colours("core")
    layers = colours("overlap-by-layer")
    assert core["residue of fr"] == score["fr"] and core["residue of de"] == score["de"]
    assert core["core"] not in {score[lang] for lang in ("en", "fr", "de")}
    assert layers["between languages"] not in {score[lang] for lang in ("en", "fr", "de")}


def test_the_component_maps_random_row_is_over_the_pairs_they_compare():
    """As in the layer and head figures: over pairs of languages, not the same language's."""
    from polyticket.analysis.report import _component_plot

    def pair(a, b, jaccard, random):
        by = {"query": {"jaccard": jaccard, "random": random}}
        return {"a": f"{a}/seed1", "b": f"{b}/seed2", "languages": [a, b],
                "same_language": a == b, "same_seed": False, "by_component": by}  # fmt: skip

    overlap = {"task": "ner", "sparsity": 0.5, "with_baseline": [],
               "pairs": [pair("en", "fr", 0.4, 0.3), pair("en", "en", 0.6, 0.5)]}  # fmt: skip
    plot = _component_plot(overlap, "jaccard", ["en", "fr"])
    values = plot.figure.axes[0].images[0].get_array()
    assert values[-1][0] == pytest.approx(0.3)  # the last row: the random expectation


def test_the_headline_counts_languages_and_multi_language_sets_apart(tmp_path):
    """It said "5 languages (en, fr, de, en+fr, en+de)", en+de among them though NLI has
    no de."""
    from polyticket.analysis.report import StudyFiles, headline_section
    from polyticket.layout import StudyLayout

    tickets = [
        {"task": task, "language": lang, "seed": 1, "score": 0.5, "dense_score": 0.5}
        for task, languages in (
            ("ner", ["en", "fr", "de", "en+fr", "en+de"]),
            ("nli", ["en", "fr", "en+fr"]),
        )
        for lang in languages
    ]
    transfer = [
        {"task": task, "greater_is_better": True, "targets": targets}
        for task, targets in (("ner", ["en", "fr", "de"]), ("nli", ["en", "fr"]))
    ]
    files = StudyFiles(StudyLayout(tmp_path), {"tickets": tickets, "transfer": transfer}, [], [])
    text = headline_section(files).parts[0].text
    assert text.startswith(
        "Tickets for ner, nli in 3 languages (en, fr, de) and 2 multi-language sets "
        "(en+fr, en+de (ner only)), seed 1."
    )
