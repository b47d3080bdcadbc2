import numpy as np
import pytest

from finerank import (
    BM25,
    Document,
    Fusion,
    Hit,
    Index,
    Pipeline,
    SecondStage,
    load_reranker,
    load_scorer,
    read_corpus,
    rerank,
)
from finerank.evaluate import fit_fusion, load_dataset
from finerank.fusion import fuse, minmax, ranks, rrf
from finerank.metrics import mean_scores


def test_pure_functions():
    np.testing.assert_array_equal(ranks(np.array([0.2, 0.9, 0.2, 0.5])), [3, 1, 4, 2])  # ties by position
    np.testing.assert_allclose(rrf([np.array([1, 2]), np.array([2, 1])], k=60), [1 / 61 + 1 / 62] * 2)
    np.testing.assert_allclose(rrf([np.array([1, 2]), np.array([1, 2])], [0.25, 0.75]), [1 / 61, 1 / 62])
    np.testing.assert_allclose(minmax(np.array([3.0, 1.0, 2.0])), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(minmax(np.array([4.0, 4.0])), [1.0, 1.0])
    second = np.array([0.1, 0.9, 0.5])
    np.testing.assert_array_equal(np.argsort(-fuse("rrf", 0.0, second), kind="stable"), [0, 1, 2])  # first stage only
    np.testing.assert_array_equal(np.argsort(-fuse("rrf", 1.0, second), kind="stable"), [1, 2, 0])  # second stage only
    np.testing.assert_allclose(
        fuse("minmax", 0.5, second, first_scores=[10.0, 0.0, 5.0]),
        [0.5 * 1 + 0.5 * 0, 0.5 * 0 + 0.5 * 1, 0.5 * 0.5 + 0.5 * 0.5],
    )
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse("borda", 0.5, second)


@pytest.fixture(scope="module")
def bi():
    return load_scorer("all-minilm-l6-v2", precision="fp32")


class Fixed:
    """A first stage that returns the given hits (to drive the pipeline's fusion step)."""

    name = "fixed"

    def __init__(self, hits):
        self.hits = hits

    def search(self, query, k=10, *, filter=None):
        return self.hits[:k]


def test_pipeline_fuses_with_the_first_stage_ranks_and_scores(bi):
    texts = [
        "Reading Excel files in Java",
        "Use pd.read_csv() to read the data",
        "Pandas basics tutorial",
        "Baking bread",
    ]
    hits = [Hit(Document(str(i), t), 10.0 - i, i + 1, i + 1) for i, t in enumerate(texts)]
    query = "How do I read a CSV file in Python?"
    for method in ("rrf", "minmax"):
        stage = SecondStage(bi, Fusion(method, 0.5))
        in_order = Pipeline(Fixed(hits), stage, top_k=4).search(query).hits
        shuffled = Pipeline(Fixed(hits[::-1]), stage, top_k=4).search(query).hits  # hits carry their ranks
        assert [h.id for h in in_order] == [h.id for h in shuffled]
        assert all(0.0 <= h.score <= 1.0 for h in in_order)
        np.testing.assert_allclose([h.score for h in in_order], [h.score for h in shuffled])
    first_only = Pipeline(Fixed(hits), SecondStage(bi, Fusion("minmax", 0.0)), top_k=4).search(query).hits
    assert [h.id for h in first_only] == ["0", "1", "2", "3"]
    second_only = Pipeline(Fixed(hits), SecondStage(bi, Fusion("rrf", 1.0)), top_k=4).search(query).hits
    assert [h.id for h in second_only] == [h.id for h in rerank(bi, query, hits)]
    with pytest.raises(ValueError, match="weight must lie"):
        Fusion("rrf", 1.5)


def test_a_plain_list_is_never_fused_and_its_order_does_not_matter(bi):
    fused = load_reranker("minilm-fused", precision="fp32")
    query = "How do I read a CSV file in Python?"
    docs = ["Reading Excel files in Java", "Use pd.read_csv() to read the data", "Bake bread at 220 degrees"]
    forward = {h.document.text: h.score for h in rerank(fused, query, docs)}
    backward = {h.document.text: h.score for h in rerank(fused, query, docs[::-1])}
    assert forward == pytest.approx(backward) and max(forward, key=forward.get) == docs[1]
    assert rerank(fused, query, docs[:1])[0].score == pytest.approx(
        forward[docs[0]]
    )  # one document: its own score, not 1.0
    assert forward == pytest.approx(dict(zip(docs, bi.score(query, docs))))


@pytest.mark.slow
def test_fit_fusion_on_a_dev_split(datasets, bi):
    dataset = load_dataset(datasets / "nfcorpus", "dev", max_queries=10)
    index = Index.build(read_corpus(datasets / "nfcorpus"))
    rows = fit_fusion(dataset, BM25(index), bi, candidates=20, weights=(0.0, 0.5, 1.0))
    assert len(rows) == 6 and rows == sorted(rows, key=lambda r: -r[2])
    bm25 = mean_scores(
        {q: [h.id for h in BM25(index).search(t, 20)] for q, t in dataset.queries.items()}, dataset.qrels
    )["ndcg@10"]
    assert dict(((m, w), n) for m, w, n in rows)[("rrf", 0.0)] == pytest.approx(bm25)
