"""Splitting text into overlapping chunks sized for embedding models, without a tokenizer."""

from __future__ import annotations

import re

WORD = re.compile(r"\S+")


def chunk_text(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Split on whitespace into windows of about `max_tokens` tokens (a word is ~4/3 tokens in
    English BPE), neighbours sharing about `overlap` tokens. No tokenizer download is needed,
    which matters in a Lambda without internet access."""
    words = WORD.findall(text)
    size = max(1, int(max_tokens * 0.75))
    step = max(1, size - int(overlap * 0.75))
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + size]))
        if start + size >= len(words):  # this window reached the end: no tail made only of overlap
            break
    return chunks
