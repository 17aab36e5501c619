"""Deterministic text embeddings for the emulator: hashed bag of words, L2-normalised.

Texts sharing words get close vectors (cosine similarity grows with the shared words), which is
all the hybrid-search tests need from a real embedding model.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

DEFAULT_DIMENSIONS = 1536
WORD = re.compile(r"\w+")
# Common words carry no meaning for matching.
STOPWORDS = frozenset({
    "a", "an", "and", "are", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
    "or", "the", "this", "to", "with", "our", "your", "we", "you",
})  # fmt: skip


def _terms(text: str) -> list[str]:
    """Lower-cased words without stopwords, crudely singular (jackets ~ jacket)."""
    words = [w.lower() for w in WORD.findall(text)]
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS]


def embed_text(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The unit vector of `text`: each term adds ±1 at a hashed position (stable across runs)."""
    vector = [0.0] * dimensions
    for term in _terms(text):
        digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:6], "little") % dimensions
        vector[slot] += 1.0 if digest[7] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0  # no words: some unit vector, so cosine stays defined
        return vector
    return [v / norm for v in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0 when either vector is zero)."""
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 0.0 if na == 0.0 or nb == 0.0 else dot / (na * nb)
