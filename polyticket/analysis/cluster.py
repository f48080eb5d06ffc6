"""Languages clustered by how much their tickets overlap, against script and family groups.

    languages, similarity = language_similarity(compare(masks, baseline), "beyond_theta0")
    tree = cluster(languages, similarity)

``language_similarity`` averages a pair measure of ``compare`` over seeds (every pair of
masks of two languages). ``cluster`` runs average-linkage hierarchical clustering on the
distance 1 − similarity and returns the dendrogram as data, for a plotting module to draw::

    {"languages": [...], "measure": ..., "distance": [[...]],
     "merges": [{"left", "right", "distance", "size"}],  # scipy's linkage: ids < n are
                                                       # languages, n + k is merge k
     "leaves": [...],                                  # left-to-right order of the leaves
     "groups": {"script": {"clusters": {lang: id}, "groups": {lang: script},
                           "adjusted_rand": float, "purity": float}, "family": ..., ...}}

Each grouping (``script``, ``family``, ``genus``; see ``LANGUAGES``) is compared with the
tree cut into as many clusters as the grouping has groups among the languages: the adjusted
Rand index (1: the same partition, about 0: no better than chance) and purity (the share of
languages in their cluster's most common group). Languages missing from ``LANGUAGES`` are
left out of that comparison.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import dendrogram, fcluster, linkage
from scipy.spatial.distance import squareform

from polyticket.analysis.overlap import language_pairs
from polyticket.errors import UserError

# code: (script, family, genus). The paper's 11 languages and the offline demo's, and more.
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "en": ("Latin", "Indo-European", "Germanic"),
    "de": ("Latin", "Indo-European", "Germanic"),
    "nl": ("Latin", "Indo-European", "Germanic"),
    "fr": ("Latin", "Indo-European", "Romance"),
    "es": ("Latin", "Indo-European", "Romance"),
    "it": ("Latin", "Indo-European", "Romance"),
    "pt": ("Latin", "Indo-European", "Romance"),
    "ru": ("Cyrillic", "Indo-European", "Slavic"),
    "uk": ("Cyrillic", "Indo-European", "Slavic"),
    "bg": ("Cyrillic", "Indo-European", "Slavic"),
    "pl": ("Latin", "Indo-European", "Slavic"),
    "cs": ("Latin", "Indo-European", "Slavic"),
    "el": ("Greek", "Indo-European", "Hellenic"),
    "hi": ("Devanagari", "Indo-European", "Indo-Iranian"),
    "mr": ("Devanagari", "Indo-European", "Indo-Iranian"),
    "bn": ("Bengali", "Indo-European", "Indo-Iranian"),
    "ur": ("Arabic", "Indo-European", "Indo-Iranian"),
    "fa": ("Arabic", "Indo-European", "Indo-Iranian"),
    "ar": ("Arabic", "Afro-Asiatic", "Semitic"),
    "he": ("Hebrew", "Afro-Asiatic", "Semitic"),
    "zh": ("Han", "Sino-Tibetan", "Sinitic"),
    "ja": ("Japanese", "Japonic", "Japonic"),
    "ko": ("Hangul", "Koreanic", "Koreanic"),
    "tr": ("Latin", "Turkic", "Turkic"),
    "fi": ("Latin", "Uralic", "Finnic"),
    "hu": ("Latin", "Uralic", "Ugric"),
    "vi": ("Latin", "Austroasiatic", "Vietic"),
    "th": ("Thai", "Kra-Dai", "Tai"),
    "id": ("Latin", "Austronesian", "Malayo-Polynesian"),
    "sw": ("Latin", "Niger-Congo", "Bantu"),
    "ta": ("Tamil", "Dravidian", "Dravidian"),
    "te": ("Telugu", "Dravidian", "Dravidian"),
}
GROUPINGS = ("script", "family", "genus")


def language_similarity(
    result: Mapping[str, Any], measure: str = "jaccard"
) -> tuple[list[str], np.ndarray]:
    """Languages (in the order of ``result["masks"]``) and the mean overall ``measure``
    between each two, over the pairs of their masks that ``language_pairs`` compares (of
    other seeds where there are any); 1 on the diagonal."""
    languages = list(dict.fromkeys(m["language"] or m["label"] for m in result["masks"]))
    of = {m["label"]: m["language"] or m["label"] for m in result["masks"]}
    values: dict[tuple[int, int], list[float]] = {}
    for pair in language_pairs(result["pairs"]):
        i, j = sorted((languages.index(of[pair["a"]]), languages.index(of[pair["b"]])))
        if i != j:
            if measure not in pair["overall"]:
                raise UserError(
                    f"no {measure!r} in the comparison (beyond_theta0 needs a baseline)"
                )
            values.setdefault((i, j), []).append(pair["overall"][measure])
    similarity = np.eye(len(languages))
    for (i, j), v in values.items():
        similarity[i, j] = similarity[j, i] = float(np.mean(v))
    return languages, similarity


def cluster(
    languages: Sequence[str], similarity: np.ndarray, measure: str = "jaccard"
) -> dict[str, Any]:
    """Average-linkage clustering on 1 − similarity; see the module docstring."""
    if len(languages) < 3:
        raise UserError(f"clustering needs at least 3 languages, not {len(languages)}")
    distance = np.clip(1.0 - similarity, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    leaves = dendrogram(tree, no_plot=True, labels=list(languages))["ivl"]
    return {
        "languages": list(languages),
        "measure": measure,
        "distance": distance.tolist(),
        "merges": [
            {"left": int(a), "right": int(b), "distance": float(d), "size": int(k)}
            for a, b, d, k in tree
        ],
        "leaves": leaves,
        "groups": {
            grouping: compared
            for grouping in GROUPINGS
            if (compared := compare_with_groups(languages, tree, grouping)) is not None
        },
    }


def add_clusters(result: dict[str, Any], measure: str = "jaccard") -> dict[str, Any]:
    """``result`` (``overlap.compare``'s) with its languages clustered by ``measure``, where
    there are three or more."""
    languages, similarity = language_similarity(result, measure)
    if len(languages) >= 3:
        result["clusters"] = cluster(languages, similarity, measure)
    return result


def compare_with_groups(
    languages: Sequence[str], tree: np.ndarray, grouping: str
) -> dict[str, Any] | None:
    """The tree cut into as many clusters as ``grouping`` has groups among the known
    languages, scored against it; None unless some group has two languages and there are
    at least two groups. Where merge heights tie, scipy's ``maxclust`` cut may give fewer
    clusters than asked (all similarities equal: one), and languages of no known group stay
    in the tree, where they can take up a cluster."""
    column = GROUPINGS.index(grouping)
    known = [i for i, lang in enumerate(languages) if lang in LANGUAGES]
    groups = [LANGUAGES[languages[i]][column] for i in known]
    count = len(set(groups))
    if not 2 <= count < len(known):  # one group, or one language per group: nothing to test
        return None
    cut = fcluster(tree, t=count, criterion="maxclust")
    clusters = [int(cut[i]) for i in known]
    return {
        "clusters": {languages[i]: c for i, c in zip(known, clusters, strict=True)},
        "groups": {languages[i]: g for i, g in zip(known, groups, strict=True)},
        "adjusted_rand": adjusted_rand(clusters, groups),
        "purity": purity(clusters, groups),
    }


def _pairs(n: int) -> float:
    return n * (n - 1) / 2


def adjusted_rand(first: Sequence[object], second: Sequence[object]) -> float:
    """Adjusted Rand index of two partitions given as labels (Hubert and Arabie, 1985)."""
    together = sum(_pairs(c) for c in Counter(zip(first, second, strict=True)).values())
    in_first = sum(_pairs(c) for c in Counter(first).values())
    in_second = sum(_pairs(c) for c in Counter(second).values())
    expected = in_first * in_second / _pairs(len(first)) if len(first) > 1 else 0.0
    most = (in_first + in_second) / 2
    return (together - expected) / (most - expected) if most != expected else 1.0


def purity(clusters: Sequence[object], groups: Sequence[object]) -> float:
    """The share of items in the most common group of their cluster."""
    by_cluster: dict[object, Counter] = {}
    for c, g in zip(clusters, groups, strict=True):
        by_cluster.setdefault(c, Counter())[g] += 1
    return sum(max(counts.values()) for counts in by_cluster.values()) / len(clusters)
