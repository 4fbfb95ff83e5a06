"""`keywords`: a Warren step in Python between two Rust steps.

It takes the `textstats.Document/1` that the Rust `load` step stores, counts its words with
scikit-learn's CountVectorizer (its tokenizer, English stop words, n-grams), and sends the
`textstats.Counts/1` that the Rust `report` step writes up. Run by warren-exec:

    warren-exec -- python3 keywords.py
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from sklearn.feature_extraction.text import CountVectorizer

import warren_step as ws


@dataclass
class Params:
    """How to count."""

    top: int = field(default=10, metadata={"doc": "How many of the most frequent terms to keep (at least 1)."})
    min_length: int = field(default=2, metadata={"doc": "Shortest word counted, in characters."})
    stop_words: Optional[Literal["english"]] = field(
        default="english", metadata={"doc": "Drop scikit-learn's English stop words (null keeps every word)."}
    )
    ngram_max: int = field(default=1, metadata={"doc": "Count runs of up to this many words as terms (1: words)."})


@dataclass
class Document:
    """textstats.Document/1, as the Rust load step sends it."""

    uri: str
    source: str
    lines: int


@ws.step(
    "keywords",
    version="1",
    input="textstats.Document/1",
    output="textstats.Counts/1",
    params=Params,
    max_duration=120,
)
def keywords(ctx: ws.Context, params: Params, doc: Document) -> dict:
    """Counts a document's terms with scikit-learn's CountVectorizer (English stop words dropped)."""
    if params.top < 1:
        raise ws.Permanent(f"top must be at least 1, not {params.top}")
    if not 1 <= params.ngram_max <= 5:
        raise ws.Permanent(f"ngram_max must be between 1 and 5, not {params.ngram_max}")
    text = ctx.read_text(doc.uri)
    pattern = r"(?u)\b\w{%d,}\b" % max(params.min_length, 1)
    vectorizer = CountVectorizer(
        stop_words=params.stop_words, token_pattern=pattern, ngram_range=(1, params.ngram_max), lowercase=False
    )
    try:
        counts = vectorizer.fit_transform([text]).toarray()[0]
    except ValueError as e:  # "empty vocabulary": nothing left to count
        raise ws.Permanent(f"{doc.source}: no words to count ({e})") from None
    terms = vectorizer.get_feature_names_out()
    ranked: List[tuple] = sorted(zip(terms, counts), key=lambda tc: (-tc[1], tc[0]))
    top = [[str(term), int(n)] for term, n in ranked[: params.top]]
    ctx.log.info("counted %d terms of %s", len(terms), doc.source)
    ctx.report({"terms": len(terms), "top": top[0][0] if top else None})
    return {"source": doc.source, "words": int(counts.sum()), "distinct": len(terms), "top": top}


if __name__ == "__main__":
    ws.run(keywords)
