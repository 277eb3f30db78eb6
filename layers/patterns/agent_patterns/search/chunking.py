"""Splitting text into overlapping chunks sized for embedding models, without a tokenizer."""

from __future__ import annotations

import re
from itertools import pairwise

WORD = re.compile(r"\S+")
GAP_CHARS = 80  # longer runs of whitespace between two words shrink to a paragraph break or a space


def _gap(gap: str) -> str:
    return gap if len(gap) <= GAP_CHARS else "\n\n" if "\n" in gap else " "


def chunk_text(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Split on whitespace into windows of about `max_tokens` tokens (a word is ~4/3 tokens in
    English BPE), neighbours sharing about `overlap` tokens. No tokenizer download is needed,
    which matters in a Lambda without internet access. A chunk keeps the whitespace between its
    words (line breaks, indentation), so Markdown stays Markdown: headings, lists and code
    blocks keep their lines."""
    found = list(WORD.finditer(text))
    words = [m.group() for m in found]
    gaps = [""] + [text[a.end() : b.start()] for a, b in pairwise(found)]
    size = max(1, int(max_tokens * 0.75))
    step = max(1, size - int(overlap * 0.75))
    chunks = []
    for start in range(0, len(words), step):
        end = min(start + size, len(words))
        chunks.append(words[start] + "".join(_gap(gaps[i]) + words[i] for i in range(start + 1, end)))
        if start + size >= len(words):  # this window reached the end: no tail made only of overlap
            break
    return chunks
