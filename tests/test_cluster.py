"""Languages clustered by ticket overlap, compared with script and family groups."""

from __future__ import annotations

import numpy as np
import pytest
from test_overlap import bert_shapes, random_mask

from polyticket.analysis.cluster import adjusted_rand, cluster, language_similarity, purity
from polyticket.analysis.overlap import compare
from polyticket.analysis.packed import PackedMask
from polyticket.errors import UserError
from polyticket.masks import Mask


def test_adjusted_rand_and_purity():
    assert adjusted_rand([1, 1, 2, 2], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert adjusted_rand([1, 2, 1, 2], ["a", "a", "b", "b"]) < 0
    assert purity([1, 1, 1, 2], ["a", "a", "b", "b"]) == pytest.approx(0.75)


def test_clusters_follow_the_overlap():
    # en, de close; ru, uk close; zh apart from both.
    languages = ["en", "de", "ru", "uk", "zh"]
    similarity = np.array(
        [
            [1.0, 0.9, 0.3, 0.3, 0.1],
            [0.9, 1.0, 0.3, 0.3, 0.1],
            [0.3, 0.3, 1.0, 0.8, 0.1],
            [0.3, 0.3, 0.8, 1.0, 0.1],
            [0.1, 0.1, 0.1, 0.1, 1.0],
        ]
    )
    tree = cluster(languages, similarity)
    assert tree["merges"][0] == {"left": 0, "right": 1, "distance": pytest.approx(0.1), "size": 2}
    # average linkage: {en, de} and {ru, uk} join at the mean of their four distances
    assert tree["merges"][2]["distance"] == pytest.approx(0.7)
    assert set(tree["leaves"]) == set(languages)
    assert tree["groups"]["script"]["adjusted_rand"] == pytest.approx(1.0)
    assert tree["groups"]["script"]["purity"] == pytest.approx(1.0)
    assert tree["groups"]["family"]["groups"]["zh"] == "Sino-Tibetan"


def test_similarity_from_compare_averages_pairs_of_other_seeds():
    shapes = bert_shapes()
    masks = [
        PackedMask.from_mask(random_mask(shapes, kept, i, language=lang, seed=i % 2), f"{lang}{i}")
        for i, (lang, kept) in enumerate([("en", 0.3), ("en", 0.3), ("fr", 0.5), ("fr", 0.5)])
    ]
    result = compare(masks)
    languages, similarity = language_similarity(result)
    assert languages == ["en", "fr"]
    between = [p for p in result["pairs"] if not p["same_language"]]
    other_seeds = [p["overall"]["jaccard"] for p in between if not p["same_seed"]]
    assert len(between) == 4 and len(other_seeds) == 2  # en0~fr3, en1~fr2
    assert similarity[0, 1] == pytest.approx(np.mean(other_seeds))
    with pytest.raises(UserError, match="needs a baseline"):
        language_similarity(result, "beyond_theta0")
    with pytest.raises(UserError, match="at least 3"):
        cluster(languages, similarity)
    assert isinstance(masks[0].to_mask(), Mask)
