"""MSC domain classifiers: the packaged MiniLM embedding classifier (+ cluster refinement) and the LLM one."""

import numpy as np
import pandas as pd
import pytest

from s1ray.curate.domains import (DomainsConfig, EmbeddingDomains, LLMDomains, kmeans, load_msc, parse_code,
                                  refine_by_clusters)
from s1ray.models.generation import Generation, GenerationConfig


@pytest.fixture(scope="module")
def embedder():
    return EmbeddingDomains(DomainsConfig(), keep_embeddings=True)


def test_package_keeps_all_61_codes():
    msc = load_msc()
    assert len(msc) == 61 and msc[0]["code"] == "03" and all(e["descriptions"] for e in msc)
    assert {"05", "11", "60", "97"} <= {e["code"] for e in msc}


def test_embedding_classifier_finds_obvious_domains(embedder):
    df = pd.DataFrame({"question": [
        "How many ways can 5 distinct books be arranged on a shelf so that two particular books are not adjacent?",
        "Find the remainder when 3^100 is divided by 7.",
        "A fair die is rolled twice. What is the probability that the sum is 7?",
        "Let G be a group of order 15. Prove that G is cyclic.",
        "Solve the differential equation y'' + y = 0 with y(0) = 1.",
    ]})
    out = embedder(df)
    assert out["domain_pred"].tolist() == ["05", "11", "60", "20", "34"]
    assert out["domain_title"][0] == "Combinatorics" and (out["domain_method"] == "embedding").all()
    assert out["domain_score"].between(0, 1).all() and "domain" not in out.columns
    assert np.stack(out["_domain_emb"]).shape == (5, 384)


def test_cluster_refinement_makes_near_duplicates_agree(embedder):
    base = ["Count the lattice paths from (0,0) to (4,4)", "Count the subsets of {1,...,10} with even sum",
            "What is gcd(84, 126)?", "Find all primes p such that p+2 and p+4 are prime"]
    emb = embedder.embed(base)
    c1, l1 = kmeans(emb, 2, seed=0)
    c2, l2 = kmeans(emb, 2, seed=0)
    assert (l1 == l2).all() and np.allclose(c1, c2)  # deterministic for a seed
    best, score = refine_by_clusters(emb, embedder.code_emb, n_clusters=2, weight=1.0)
    # weight 1: a cluster's members all take the centroid's code
    for k in set(l1):
        assert len(set(best[l1 == k])) == 1
    best0, _ = refine_by_clusters(emb, embedder.code_emb, n_clusters=2, weight=0.0)
    assert (best0 == (emb @ embedder.code_emb.T).argmax(1)).all()  # weight 0: plain nearest code


def test_parse_code():
    assert parse_code("Code: 05") == "05"
    assert parse_code("**Code:** 11 (Number theory)") == "11"
    assert parse_code("I think this is 60, probability") == "60"
    assert parse_code("Code: 7") is None and parse_code("no idea") is None and parse_code("") is None


def test_llm_classifier_parses_generator_replies():
    class FixedFormat:
        def __init__(self):
            self.prompts = []

        def chat_prompt(self, user, system=None):
            return user

        def generate(self, prompts, max_new_tokens=None, stop=None):
            self.prompts += prompts
            return [Generation("Code: 11" if "prime" in p.split("Problem:")[1] else "hmm", 3, "stop")
                    for p in prompts]

    gen = FixedFormat()
    cfg = DomainsConfig(method="llm", llm=GenerationConfig(model="tiny:tiny"))
    out = LLMDomains(cfg, generator=gen)(pd.DataFrame({"question": ["Is 91 prime?", "Draw a cat"]}))
    assert out["domain_pred"][0] == "11" and out["domain_title"][0] == "Number theory"
    assert pd.isna(out["domain_pred"][1]) and out["domain_raw"][1] == "hmm"
    assert "05: Combinatorics" in gen.prompts[0] and "97: Mathematics education" in gen.prompts[0]
    with pytest.raises(ValueError, match="llm"):
        DomainsConfig(method="llm")
