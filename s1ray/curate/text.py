"""Vectorised text features shared by the rule stages: tokens, n-gram hashes, MinHash.

Everything works on a whole Arrow batch at once (pyarrow kernels + numpy), because the
per-row work is tiny and Python per-row loops would dominate. Hashes are content-based
(blake2b of the token text, then splitmix64 mixing), so every batch, worker and run agrees.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

U64 = np.uint64
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_PRIME = U64(0x9E3779B97F4A7C15)

# Numbers (with decimals) and single non-space, non-word characters become tokens of their own.
# ASCII classes keep RE2 fast; any other character (accents, CJK) is a token of its own.
_SPLIT_MATH = r"([0-9]+(?:\.[0-9]+)?|[^\sa-zA-Z0-9])"
_NON_WORD = r"[^a-z0-9\x{80}-\x{10FFFF}]+"


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit mix (wrapping arithmetic)."""
    x = np.asarray(x, dtype=U64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> U64(30))) * _M1
        x = (x ^ (x >> U64(27))) * _M2
    return x ^ (x >> U64(31))


def hash_strings(values: pa.Array | list[str]) -> np.ndarray:
    """Stable 64-bit hashes of strings (same value in every process, unlike ``hash``).

    Vectorised over the UTF-8 buffer: one multiply-mix per byte position, for all strings at
    once; strings longer than 64 bytes (rare for tokens) are hashed with blake2b instead.
    """
    arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, U64)
    arr = pc.cast(arr, pa.large_string()) if arr.type != pa.large_string() else arr
    offsets = np.frombuffer(arr.buffers()[1], np.int64, n + 1, arr.offset * 8)
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lens = np.diff(offsets)
    h = mix64(lens.astype(U64) + U64(0x51ED27))
    maxlen = int(min(lens.max(initial=0), 64))
    with np.errstate(over="ignore"):
        for j in range(maxlen):
            live = lens > j
            h[live] = mix64(h[live] * _PRIME + data[offsets[:-1][live] + j].astype(U64))
    for i in np.flatnonzero(lens > 64):
        v = data[offsets[i]:offsets[i + 1]].tobytes()
        h[i] = int.from_bytes(hashlib.blake2b(v, digest_size=8).digest(), "little")
    return h


class Tokens:
    """The tokens of a batch of texts as one flat array with per-document offsets."""

    def __init__(self, texts: pa.Array, words_only: bool = False, whitespace: bool = False):
        """``words_only``: lowercase alphanumeric runs; ``whitespace``: lowercase text split on
        whitespace only, punctuation kept in the words (s1's decontamination); neither: words,
        numbers and single symbols, case kept."""
        texts = pc.fill_null(texts, "")
        if whitespace:
            spaced = pc.utf8_lower(texts)
        elif words_only:
            spaced = pc.replace_substring_regex(pc.utf8_lower(texts), _NON_WORD, " ")
        else:  # case is kept in the vocabulary (ALL-CAPS words are content) but not in hashes
            spaced = pc.replace_substring_regex(texts, _SPLIT_MATH, r" \1 ")
        lists = pc.utf8_split_whitespace(spaced)
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        offsets = lists.offsets.to_numpy().astype(np.int64) - int(lists.offsets[0].as_py())
        flat = lists.flatten()
        nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
        if not nonempty.all():  # splitting "" yields [""]
            doc = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            flat = flat.filter(pa.array(nonempty))
            counts = np.bincount(doc[nonempty], minlength=len(offsets) - 1)
            offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self.offsets = offsets
        enc = pc.dictionary_encode(flat)
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks()
        self.vocab_arr = enc.dictionary
        self.codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.vocab_hash = hash_strings(pc.utf8_lower(self.vocab_arr))
        self.hashes = self.vocab_hash[self.codes] if len(self.codes) else np.zeros(0, U64)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc_of(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_docs), self.counts())

    @property
    def vocab(self) -> list[str]:
        return self.vocab_arr.to_pylist()

    def vocab_match(self, pattern: str) -> np.ndarray:
        """Per-token boolean: the token matches a (RE2) regex; evaluated once per distinct token."""
        vm = pc.match_substring_regex(self.vocab_arr, pattern).to_numpy(zero_copy_only=False)
        return vm[self.codes] if len(self.codes) else np.zeros(0, bool)


def ngram_hashes(tokens: Tokens, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram inside each document: (hashes, document index), document-ordered."""
    h, N = tokens.hashes, len(tokens.hashes)
    if N < n:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    m = N - n + 1
    s = h[:m].copy()
    with np.errstate(over="ignore"):
        for t in range(1, n):
            s = mix64(s * _PRIME + h[t : t + m])
    doc = tokens.doc_of()[:m]
    valid = np.arange(m) + n <= tokens.offsets[doc + 1]
    return s[valid], doc[valid]


def shingles(tokens: Tokens, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-token shingles; documents shorter than k tokens fall back to their single tokens."""
    s, doc = ngram_hashes(tokens, k)
    short = np.flatnonzero((tokens.counts() < k) & (tokens.counts() > 0))
    if len(short):
        doc_all = tokens.doc_of()
        pick = np.isin(doc_all, short)
        s = np.concatenate([s, tokens.hashes[pick]])
        doc = np.concatenate([doc, doc_all[pick]])
        order = np.argsort(doc, kind="stable")
        s, doc = s[order], doc[order]
    return s, doc


def minhash(shingle_hash: np.ndarray, doc: np.ndarray, n_docs: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) uint32 via multiply-shift hashing.

    Documents without shingles get all-0xFFFFFFFF rows; callers must not bucket those.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | U64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    sig = np.full((num_perm, n_docs), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(shingle_hash) == 0:
        return sig.T.copy()
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    docs = doc[starts]
    # One permutation at a time: 1-D reduceat is ~20x faster than a 2-D one along axis 0.
    with np.errstate(over="ignore"):
        for p in range(num_perm):
            v = ((shingle_hash * a[p] + b[p]) >> U64(32)).astype(np.uint32)
            sig[p, docs] = np.minimum.reduceat(v, starts)
    sig = np.ascontiguousarray(sig.T)
    return sig
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    docs = doc[starts]
    x = shingle_hash[:, None]
    for lo in range(0, num_perm, 16):
        with np.errstate(over="ignore"):
            v = ((x * a[None, lo : lo + 16] + b[None, lo : lo + 16]) >> U64(32)).astype(np.uint32)
        sig[docs, lo : lo + 16] = np.minimum.reduceat(v, starts, axis=0)
    return sig


# Words that carry the content of a math question as much as its numbers do: number words,
# ordinals and the relations/objects a one-word edit flips ("odd" vs "even functions").
CONTENT_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|"
    "thousand|million|billion|half|twice|thrice|double|triple|once|first|second|third|fourth|fifth|"
    "sixth|seventh|eighth|ninth|tenth|last|odd|even|minimum|maximum|smallest|largest|greatest|least|"
    "sum|product|difference|quotient|positive|negative|nonnegative|nonpositive|real|imaginary|prime|"
    "composite|rational|irrational|increasing|decreasing|inside|outside|horizontal|vertical|perimeter|"
    "area|volume|surface|radius|diameter|circumference|row|column|mean|median|mode|range|sine|cosine|"
    "tangent|parallel|perpendicular|acute|obtuse|clockwise|counterclockwise|left|right|upper|lower|"
    "necessary|sufficient|true|false|not|never|always|exactly|distinct|consecutive|larger|smaller|bigger|"
    "higher|longer|shorter|taller|heavier|lighter|faster|slower|earlier|later|up|down|top|bottom|integer|"
    "hundredth|thousandth|hundredths|tenths|mass|atomic|bisector|altitude|median|tangent|chord"
)


def math_key(tokens: Tokens) -> np.ndarray:
    """Per-document hash of the ordered content tokens (0 when there are none).

    Content tokens: numbers, math symbols, LaTeX command names (the word after a backslash),
    everything between ``$`` signs, number words and ordinals, math relation words
    (:data:`CONTENT_WORDS`) and ALL-CAPS words ("arrange the letters of ELLIPSE"). Rewording
    a sentence leaves the key unchanged; changing a number, an operator or one of these words
    changes it.
    """
    n_docs = tokens.n_docs
    if len(tokens.hashes) == 0:
        return np.zeros(n_docs, U64)
    is_num = tokens.vocab_match(r"^[0-9]+(\.[0-9]+)?$")
    is_sym = tokens.vocab_match(r"^[^a-zA-Z0-9\s.,;:?!'\"`$\x{80}-\x{10FFFF}]$")
    is_dollar = tokens.vocab_match(r"^\$$")
    is_backslash = tokens.vocab_match(r"^\\$")
    is_word = tokens.vocab_match(f"^(?i:{CONTENT_WORDS})$") | tokens.vocab_match(r"^[A-Z]{2,}$")
    starts = tokens.offsets[:-1]
    doc = tokens.doc_of()
    cum = np.cumsum(is_dollar)
    before = np.r_[0, cum][starts][doc]  # dollars before each document
    in_math = ((cum - before) % 2 == 1) & ~is_dollar
    after_bs = np.r_[False, is_backslash[:-1]] & (np.arange(len(doc)) > starts[doc])
    mask = is_num | is_sym | in_math | after_bs | is_word
    rank = np.cumsum(mask) - 1
    rank = rank - np.r_[0, np.cumsum(mask)][starts][doc]
    with np.errstate(over="ignore"):
        contrib = mix64(tokens.hashes ^ mix64(rank.astype(U64) + U64(1))) * mask.astype(U64)
    out = np.zeros(n_docs, U64)
    np.add.at(out, doc, contrib)
    return out
