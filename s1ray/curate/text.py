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

# Scripts written without spaces between words: each character is a token (a "word") of its own.
SCRIPT_CHARS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
CJK_CHAR = f"[{SCRIPT_CHARS}]"
# Numbers (with decimals), characters of space-less scripts and single characters that are neither
# letters nor digits (symbols, punctuation) become tokens of their own; runs of letters of any other
# script are words. On ASCII text this is exactly "words, numbers and single symbols".
_SPLIT_MATH = rf"([0-9]+(?:\.[0-9]+)?|{CJK_CHAR}|[^\s\p{{L}}\p{{M}}0-9])"
_NON_WORD = r"[^\p{L}\p{M}\p{N}]+"


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
        """``words_only``: lowercase runs of letters and digits (any script); ``whitespace``:
        lowercase text split on whitespace only, punctuation kept in the words (s1's
        decontamination); neither: words, numbers and single symbols, case kept. In both
        non-whitespace modes every character of a space-less script (Chinese, Japanese, Korean,
        Thai, ...) is a token, so those languages get n-grams and shingles too."""
        texts = pc.fill_null(texts, "")
        if whitespace:
            spaced = pc.utf8_lower(texts)
        elif words_only:
            spaced = pc.replace_substring_regex(pc.utf8_lower(texts), _NON_WORD, " ")
            spaced = pc.replace_substring_regex(spaced, f"({CJK_CHAR})", r" \1 ")
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
    return np.ascontiguousarray(sig.T)


def count_words(texts: pa.Array) -> pa.Array:
    """Words per text: whitespace-separated words, where each character of a space-less script
    (Chinese, Japanese, Korean, Thai, ...) counts as a word and punctuation after one (or CJK
    punctuation anywhere) does not.

    On text without such characters this is the whitespace word count (leading and trailing
    whitespace is not a word). Pure-ASCII texts (most of an English pool) skip the regexes.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts, "")
    out = _whitespace_words(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    other = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
    if len(other):
        sub = pc.take(texts, pa.array(other))
        n_chars = pc.count_substring_regex(sub, CJK_CHAR)
        rest = pc.replace_substring_regex(sub, rf"{CJK_CHAR}[\p{{P}}]*|{_CJK_PUNCT}", " ")
        out[other] = pc.add(_whitespace_words(rest), n_chars).to_numpy(zero_copy_only=False)
    return pa.array(out, pa.int64())


def _whitespace_words(texts: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(texts)
    return pc.if_else(pc.equal(pc.utf8_length(trimmed), 0), 0,
                      pc.list_value_length(pc.utf8_split_whitespace(trimmed)))


# CJK and full-width punctuation (、。「」，？！：；...): separators, not words.
_CJK_PUNCT = r"[\x{3000}-\x{303F}\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF20}\x{FF3B}-\x{FF40}\x{FF5B}-\x{FF65}]"


# Words that carry the content of a math question as much as its numbers do: number words,
# ordinals and the relations/objects a one-word edit flips ("odd" vs "even functions"). The
# first (``key_words: basic``) list; :data:`KEY_CONCEPTS` extends it.
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

# Key concepts (``key_words: concepts``, the default): words in one group are interchangeable
# (a rewording may swap them), words of different groups are not (swapping them makes a sibling
# exercise: min/max, long/short, kinetic energy/momentum, opposite/adjacent, boys/girls, who/how
# much). A plural "s" is stripped when only the singular is listed. Every word of
# :data:`CONTENT_WORDS` is a concept of its own unless grouped here.
KEY_CONCEPTS = (
    # extremes and comparisons
    "maximum|max|maximal|maximize|maximise|maximum|largest|greatest|biggest|highest|most",
    "minimum|min|minimal|minimize|minimise|smallest|least|lowest|fewest",
    "larger|bigger|greater|more|additional|extra", "smaller|less|fewer|lesser", "higher", "lower",
    "big|large|huge", "small|little|tiny", "long|longer|longest", "short|shorter|shortest",
    "tall|taller|tallest", "heavy|heavier|heaviest", "light|lighter|lightest", "fast|faster|fastest|quick|quicker",
    "slow|slower|slowest", "early|earlier|earliest", "late|later|latest", "old|older|oldest",
    "young|younger|youngest", "wide|wider|widest", "narrow|narrower", "thick|thicker", "thin|thinner",
    "deep|deeper", "hot|hotter", "cold|colder", "warm|warmer", "cheap|cheaper|cheapest", "expensive",
    "increase|increased|increasing|ascending|rise|rose|grow|grew|gain|gained",
    "decrease|decreased|decreasing|descending|fall|fell|drop|dropped|lose|lost|loss",
    "total|overall|altogether|combined", "each|every|per|apiece",
    # operations, relations, logic
    "add|plus", "subtract|minus", "multiply|times", "divide|divided", "or", "without", "except",
    "not|no|none|neither|nor|cannot", "all", "some", "both", "either", "only", "possible", "impossible",
    "likely", "unlikely", "correct", "incorrect|wrong", "related", "unrelated", "dependent", "independent",
    "direct|directly", "inverse|inversely",
    # where, when, who, why: a question about a person/place/time/reason is another question
    "who|whom|whose", "where", "when", "why",
    # positions and directions
    "before", "after", "above|over", "below|under|beneath", "front", "behind|back", "within", "between",
    "north", "south", "east", "west", "anticlockwise|counterclockwise",
    # geometry, algebra, statistics
    "opposite", "adjacent", "hypotenuse", "sin|sine", "cos|cosine", "tan|tangent", "cot|cotangent",
    "secant", "csc|cosecant", "mean|average", "variance", "deviation", "probability", "expected",
    "height", "width", "length", "depth", "angle", "side", "edge", "vertex|vertices", "face", "diagonal",
    "square", "cube", "cubic", "circle", "triangle", "rectangle", "polygon", "sphere", "cylinder", "cone",
    "domain", "derivative", "integral", "limit", "slope", "intercept", "root", "factor", "multiple",
    "divisor", "remainder", "numerator", "denominator", "digit", "natural", "whole", "decimal", "fraction",
    "percent|percentage", "ratio", "rate", "interest", "simple", "compound", "profit", "cost|price",
    "revenue", "discount", "tax", "salary|wage|wages",
    # physics and chemistry quantities
    "kinetic", "potential", "energy", "momentum", "velocity", "speed", "acceleration", "force", "power",
    "work", "pressure", "weight", "density", "charge", "current", "voltage", "resistance", "frequency",
    "wavelength", "period", "amplitude", "temperature", "heat", "displacement", "distance", "torque",
    "impulse", "friction", "tension", "elastic", "inelastic", "electric", "magnetic", "gravitational",
    "entropy", "enthalpy", "acid|acidic", "base|basic", "oxidation", "reduction", "molar", "molecular",
    # units (how many minutes vs how many hours)
    "second|seconds", "minute", "hour|hr", "day", "week", "month", "year", "meter|metre", "centimeter|cm",
    "millimeter|mm", "kilometer|km", "mile", "foot|feet|ft", "inch|inches", "yard", "gram", "kilogram|kg",
    "pound|lb", "ounce|oz", "liter|litre", "milliliter|ml", "gallon", "dollar", "cent", "euro",
    # calendar: "What day of the week was May 13?" vs "June 13?"
    "january|jan", "february|feb", "march|mar", "april|apr", "may", "june|jun", "july|jul", "august|aug",
    "september|sep|sept", "october|oct", "november|nov", "december|dec", "monday", "tuesday", "wednesday",
    "thursday", "friday", "saturday", "sunday",
    # actors and objects a sibling swaps
    "buy|bought|purchase|purchased", "sell|sold", "give|gave", "receive|received", "spend|spent",
    "save|saved", "borrow|borrowed", "lend|lent", "pay|paid", "win|won", "boy", "girl", "man|men", "woman|women",
    "male", "female", "adult", "child|children|kid", "student", "teacher", "red", "blue", "green", "yellow",
    "white", "black", "orange", "purple", "head", "tail",
    # Chinese: numerals, and characters whose swap flips the question
    "零|〇", "一", "二|两", "三", "四", "五", "六", "七", "八", "九", "十", "百", "千", "万", "亿", "半", "倍",
    "大", "小", "多", "少", "长", "短", "高", "低", "快", "慢", "前", "后", "左", "右", "上", "下",
    "加", "减", "乘", "除", "增", "降", "最", "买", "卖", "男", "女", "奇", "偶", "红", "蓝", "白", "黑",
    "和", "差", "积", "商", "周", "面", "体", "每", "共",
)


# Number words, ordinals and Chinese numerals count in order, like numbers ("the first row and
# second column" is not "the second row and first column"); other key words as a multiset.
ORDERED_WORDS = frozenset(CONTENT_WORDS.split("|last|")[0].split("|") + ["last", "hundredth", "thousandth",
                          "hundredths", "tenths", "零", "一", "二", "三", "四", "五", "六", "七", "八", "九",
                          "十", "百", "千", "万", "亿", "半", "倍"])


def _lexicon(key_words: str) -> tuple[pa.Array, np.ndarray]:
    """(words, concept hash per word) for ``key_words`` = ``concepts`` or ``basic``."""
    cached = _LEXICONS.get(key_words)
    if cached is not None:
        return cached
    groups = [w for w in CONTENT_WORDS.split("|")]
    groups = [[w] for w in dict.fromkeys(groups)]
    if key_words == "concepts":
        grouped = [g.split("|") for g in KEY_CONCEPTS]
        seen = {w for g in grouped for w in g}
        groups = grouped + [g for g in groups if g[0] not in seen]
    elif key_words != "basic":
        raise ValueError(f"key_words must be 'concepts' or 'basic', not {key_words!r}")
    words, concept = [], []
    for g in groups:
        h = hash_strings(["\x00concept:" + g[0]])[0] & ~U64(1)
        if key_words == "basic" or g[0] in ORDERED_WORDS:
            h |= U64(1)  # the low bit marks a concept that counts in order, like a number
        for w in g:
            if w not in words:
                words.append(w)
                concept.append(h)
    out = (pa.array(words, pa.string()), np.array(concept, dtype=U64))
    _LEXICONS[key_words] = out
    return out


_LEXICONS: dict[str, tuple[pa.Array, np.ndarray]] = {}


def _vocab_concepts(vocab: pa.Array, key_words: str) -> np.ndarray:
    """Per vocabulary entry: its concept hash (0 = not a key word); a plural 's' may be stripped."""
    words, concept = _lexicon(key_words)
    lower = pc.utf8_lower(vocab)
    out = np.zeros(len(vocab), U64)
    pos = pc.index_in(lower, value_set=words).to_numpy(zero_copy_only=False)
    hit = ~np.isnan(pos.astype(float))
    out[hit] = concept[pos[hit].astype(np.int64)]
    if key_words == "concepts":
        stem = pc.utf8_slice_codeunits(lower, 0, -1)
        plural = pc.and_(pc.ends_with(lower, "s"), pc.greater(pc.utf8_length(lower), 3)).to_numpy(zero_copy_only=False)
        pos2 = pc.index_in(stem, value_set=words).to_numpy(zero_copy_only=False)
        hit2 = ~hit & plural & ~np.isnan(pos2.astype(float))
        out[hit2] = concept[pos2[hit2].astype(np.int64)]
    return out


def math_key(tokens: Tokens, key_words: str = "concepts") -> np.ndarray:
    """Per-document hash of the ordered content tokens (0 when there are none).

    Content tokens: numbers, math symbols, LaTeX command names (the word after a backslash),
    everything between ``$`` signs, key words (number words, ordinals, relations, quantities,
    units, interrogatives: :data:`KEY_CONCEPTS`, or only :data:`CONTENT_WORDS` with
    ``key_words="basic"``), ALL-CAPS words ("arrange the letters of ELLIPSE") and single letters
    other than "a" and "I" ("how many times does the letter h appear", "solve for x"). A key word
    counts as its concept, so swapping synonyms ("largest"/"greatest") keeps the key while
    flipping a word ("long"/"short") or changing a number or an operator changes it: this is
    the differing-token test that tells a rewording from a sibling exercise. Numbers, formulas
    and number words/ordinals count in order, other key words as a multiset (a rewording may
    move "in total").
    """
    n_docs = tokens.n_docs
    if len(tokens.hashes) == 0:
        return np.zeros(n_docs, U64)
    is_num = tokens.vocab_match(r"^[0-9]+(\.[0-9]+)?$")
    is_sym = tokens.vocab_match(r"^[^a-zA-Z0-9\s.,;:?!'\"`$\x{80}-\x{10FFFF}]$")
    is_dollar = tokens.vocab_match(r"^\$$")
    is_backslash = tokens.vocab_match(r"^\\$")
    vconcept = _vocab_concepts(tokens.vocab_arr, key_words)
    concept = vconcept[tokens.codes]
    # ALL-CAPS words and single letters other than "a"/"I" (variables, labels: "the letter h") are content.
    content = r"^([A-Z]{2,}|[b-zB-HJ-Z])$" if key_words == "concepts" else r"^[A-Z]{2,}$"
    is_word = (concept != 0) | tokens.vocab_match(content)
    starts = tokens.offsets[:-1]
    doc = tokens.doc_of()
    cum = np.cumsum(is_dollar)
    before = np.r_[0, cum][starts][doc]  # dollars before each document
    in_math = ((cum - before) % 2 == 1) & ~is_dollar
    after_bs = np.r_[False, is_backslash[:-1]] & (np.arange(len(doc)) > starts[doc])
    ordered_word = (concept & U64(1)) == 1
    literal = is_num | is_sym | in_math | after_bs | (is_word & ((concept == 0) | ordered_word))
    key_word = ~literal & is_word
    value = np.where(concept != 0, concept, tokens.hashes)
    rank = np.cumsum(literal) - 1
    rank = rank - np.r_[0, np.cumsum(literal)][starts][doc]
    with np.errstate(over="ignore"):
        # Numbers, formulas and number words count in order; other key words as a multiset (a
        # rewording may move "in total" to another place).
        contrib = (mix64(value ^ mix64(rank.astype(U64) + U64(1))) * literal.astype(U64)
                   + mix64(concept ^ U64(0x6A09E667F3BCC909)) * key_word.astype(U64))
    out = np.zeros(n_docs, U64)
    np.add.at(out, doc, contrib)
    return out


def edit_keys(tokens: Tokens, min_tokens: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """One-edit neighbourhood keys of short documents: (keys, document index).

    A document of ``min_tokens``..``max_tokens`` tokens gets the hash of its whole token
    sequence and, for every position, the hash of the sequence without that token (SymSpell's
    deletion neighbourhood). Two documents that differ by one substituted, inserted or deleted
    token share a key, however short they are, where a 3-token-shingle Jaccard of a 10-word
    question with one word changed is only ~0.45. Case is ignored (token hashes are lowercase).
    """
    counts = tokens.counts()
    sel_doc = (counts >= max(min_tokens, 1)) & (counts <= max_tokens)
    if not sel_doc.any() or len(tokens.hashes) == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    doc = tokens.doc_of()
    pick = sel_doc[doc]
    d = doc[pick]
    h = tokens.hashes[pick]
    pos = (np.arange(len(doc)) - tokens.offsets[:-1][doc])[pick].astype(U64)
    with np.errstate(over="ignore"):
        at = mix64(h ^ mix64(pos + U64(1)))  # token at its own position
        shifted = mix64(h ^ mix64(pos))  # token one position earlier (after a deletion before it)
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        lens = np.diff(np.r_[starts, len(d)])
        cum_at = np.cumsum(at, dtype=U64)
        cum_sh = np.cumsum(shifted, dtype=U64)
        base_at = np.repeat(np.r_[U64(0), cum_at][starts], lens)
        end_sh = np.repeat(cum_sh[starts + lens - 1], lens)
        # without token i: tokens before i at their positions + tokens after i moved one back
        before = cum_at - at - base_at
        after = end_sh - cum_sh
        deleted = mix64(before + after + U64(0xD1B54A32D192ED03))
        whole = mix64(np.add.reduceat(at, starts, dtype=U64) + U64(0xD1B54A32D192ED03))
    keys = np.concatenate([deleted, whole])
    docs = np.concatenate([d, d[starts]])
    return keys, docs


# --- reference answers and options, for the dedup guards --------------------------------------

_ANSWER_DROP = (r"\\boxed|\\text|\\textbf|\\mathrm|\\mathbf|\\left|\\right|\\displaystyle|\\[,;:! ]|"
                r"\\quad|\$|\s+|\^\\circ|°")


def normalize_answers(answers: pa.Array) -> pa.Array:
    """Reference answers in a comparable form: case, spaces, ``$``, ``\\boxed``/``\\text`` wrappers,
    thousands separators, ``\\frac{a}{b}`` vs ``a/b``, trailing zeros and a final period ignored."""
    a = pc.utf8_lower(pc.utf8_trim_whitespace(pc.fill_null(answers, "")))
    a = pc.replace_substring_regex(a, r"\\[dt]frac", r"\\frac")
    a = pc.replace_substring_regex(a, _ANSWER_DROP, "")
    a = pc.replace_substring_regex(a, r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2")
    a = pc.replace_substring_regex(a, r"\\frac([0-9])([0-9])", r"\1/\2")
    a = pc.replace_substring_regex(a, r"[{}]", "")
    a = pc.replace_substring_regex(a, r"([0-9]),([0-9]{3})", r"\1\2")
    a = pc.replace_substring_regex(a, r"([0-9]),([0-9]{3})", r"\1\2")  # 1,000,000: overlapping groups
    a = pc.replace_substring_regex(a, r"\.+$", "")
    a = pc.replace_substring_regex(a, r"^(-?[0-9]+)\.0+$", r"\1")
    return pc.replace_substring_regex(a, r"^(-?[0-9]*\.[0-9]*?)0+$", r"\1")


def _text_keys(values: pa.Array) -> np.ndarray:
    """Stable hashes of normalized texts, 0 for empty ones."""
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(values, "")), r"\s+", " "))
    h = hash_strings(norm) | U64(1)
    empty = pc.equal(pc.utf8_length(norm), 0).to_numpy(zero_copy_only=False)
    h[empty] = 0
    return h


def choices_keys(choices: pa.Array) -> np.ndarray:
    """Per row, an order-free hash of the normalized options (0 without options)."""
    if isinstance(choices, pa.ChunkedArray):
        choices = choices.combine_chunks()
    n = len(choices)
    out = np.zeros(n, U64)
    flat = choices.flatten()
    if n == 0 or len(flat) == 0:
        return out
    parent = pc.list_parent_indices(choices).to_numpy()
    with np.errstate(over="ignore"):
        np.add.at(out, parent, mix64(_text_keys(flat) + U64(0x9E37)))
    return out


def answer_keys(answers: pa.Array, choices: pa.Array | None = None) -> np.ndarray:
    """Per row, a hash of the normalized reference answer (0 without one).

    A multiple-choice answer given as a letter stands for its option's text, so the same
    question with its options in another order has the same answer key.
    """
    if isinstance(answers, pa.ChunkedArray):
        answers = answers.combine_chunks()
    vals = answers
    if choices is not None:
        if isinstance(choices, pa.ChunkedArray):
            choices = choices.combine_chunks()
        letters = pc.utf8_upper(pc.utf8_trim(pc.fill_null(answers, ""), "() .:"))
        is_letter = pc.match_substring_regex(letters, r"^[A-Z]$").to_numpy(zero_copy_only=False)
        n_opt = pc.fill_null(pc.list_value_length(choices), 0).to_numpy(zero_copy_only=False)
        idx = np.full(len(answers), -1)
        rows = np.flatnonzero(is_letter)
        if len(rows):
            idx[rows] = [ord(c) - 65 for c in pc.take(letters, pa.array(rows)).to_pylist()]
        ok = (idx >= 0) & (idx < n_opt)
        if ok.any():
            py = vals.to_pylist()
            ch = choices.to_pylist()
            for r in np.flatnonzero(ok):
                py[r] = ch[r][idx[r]]
            vals = pa.array(py, pa.string())
    h = hash_strings(normalize_answers(vals)) | U64(1)
    empty = pc.equal(pc.utf8_length(normalize_answers(vals)), 0).to_numpy(zero_copy_only=False)
    h[empty] = 0
    return h
