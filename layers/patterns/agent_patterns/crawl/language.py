"""The language of a page that does not declare one (`<html lang>`), told from its text.

The writing system first (kana, Hangul, Han, Arabic, Hebrew, Greek, Thai, Devanagari, ...),
then, for text in Latin or Cyrillic letters, the share of each language's commonest words. No
model, no dependency, the same answer every time; `None` when the text is too short or no
language clearly leads.
"""

from __future__ import annotations

import re
from collections import Counter

MAX_CHARS = 20_000  # enough to tell; the rest of a long page changes nothing
MIN_HITS = 4  # common words of the winner, at least
LEAD = 1.3  # and this many times the runner-up's

# The commonest function words; a word may belong to several languages.
_COMMON = {
    "en": "the of and to in is that for it with as was on are be this by not or at from have an which you we",
    "de": "der die und das ist nicht ein eine zu den mit von sich des auf für im dem auch es wird wir sie zum",
    "fr": "le la les de des et est une un du que pour dans qui pas sur au avec ce il sont nous vous aux",
    "es": "el la de que y en los las del se por un una para con es no al lo como más su pero sus",
    "it": "il di che la e è per un una non del della sono con le gli si da al nel anche dei questo",
    "pt": "de que o a os as do da em um uma para com não no na se por mais é são dos das",
    "nl": "de het een en van is dat niet op te in voor met zijn er die ook aan als bij wordt",
    "sv": "och att det som en är på för av med till den har inte ett om var jag men",
    "da": "og at det som en er på for af med til den har ikke et de jeg var men",
    "nb": "og i det som en er på for av med til den har ikke et jeg var å men",
    "fi": "ja on ei se että hän oli ovat mutta kun tai myös joka kuin niin mitä jos",
    "pl": "i w na nie z to się że do jest jak o co ale po tak od jego przez dla",
    "cs": "a v se na je že to s z do o jsou by ale jako pro jak tak jeho podle",
    "tr": "ve bir bu da de için ile olarak çok daha gibi olan ne ama kadar en",
    "ro": "și de în la cu pe nu că o un este din care mai sau pentru",
    "hu": "a az és hogy nem egy is van meg de csak ez már volt mint",
    "id": "yang dan di ini itu dengan untuk tidak dari dalam akan pada juga adalah",
    "ru": "и в не на что с как по это он но из у за от к так же его для",
    "uk": "і в не на що з як та це до але від за у й його він для які",
    "bg": "и в на не да се е за от с че по са като това които",
}
COMMON = {lang: frozenset(words.split()) for lang, words in _COMMON.items()}
CYRILLIC_LANGS = ("ru", "uk", "bg")

# Writing systems that (nearly) name their language, with the share of the letters that tells.
_SCRIPTS = (
    ("ja", re.compile(r"[\u3040-\u30ff]"), 0.05),  # kana: Japanese, even among many Han characters
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]"), 0.3),
    ("zh", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]"), 0.3),
    ("ar", re.compile(r"[\u0600-\u06ff]"), 0.3),
    ("he", re.compile(r"[\u0590-\u05ff]"), 0.3),
    ("el", re.compile(r"[\u0370-\u03ff]"), 0.3),
    ("th", re.compile(r"[\u0e00-\u0e7f]"), 0.3),
    ("hi", re.compile(r"[\u0900-\u097f]"), 0.3),
    ("bn", re.compile(r"[\u0980-\u09ff]"), 0.3),
    ("ta", re.compile(r"[\u0b80-\u0bff]"), 0.3),
    ("hy", re.compile(r"[\u0530-\u058f]"), 0.3),
    ("ka", re.compile(r"[\u10a0-\u10ff]"), 0.3),
)
_PERSIAN = re.compile(r"[پچژگ]")  # Arabic script, letters Arabic does not use
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_WORD = re.compile(r"[^\W\d_]+")
# Markdown that is not prose: code, link targets, bare URLs.
_NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\]\([^)\s]*\)|<?https?://\S+", re.S)


def detect_language(text: str) -> str | None:
    """An ISO 639-1 code for `text` (Markdown or plain), or None when unsure."""
    prose = _NOT_PROSE.sub(" ", text[:MAX_CHARS])
    only_letters = _NOT_LETTERS.sub("", prose)  # one pass in C; every count below is of letters
    letters = len(only_letters)
    if letters < 20:
        return None
    latin = only_letters.isascii()  # most pages: no other writing system to look for
    for lang, script, least in () if latin else _SCRIPTS:
        if len(script.findall(only_letters)) / letters > least:
            return "fa" if lang == "ar" and len(_PERSIAN.findall(only_letters)) / letters > 0.01 else lang
    words = Counter(w.lower() for w in _WORD.findall(prose))
    cyrillic = not latin and len(_CYRILLIC.findall(only_letters)) / letters > 0.3
    candidates = CYRILLIC_LANGS if cyrillic else tuple(c for c in COMMON if c not in CYRILLIC_LANGS)
    ranked = sorted(((sum(words[w] for w in COMMON[c]), c) for c in candidates), reverse=True)
    (best, lang), (second, _) = ranked[0], ranked[1]
    if best < MIN_HITS or best < LEAD * second:
        return None
    return lang


_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def declared_language(value: str) -> str | None:
    """A page's own `lang` as a BCP 47 tag (`en`, `en-GB`, `zh-Hant`), or None when it is not one."""
    tag = value.strip().replace("_", "-")
    if not _TAG.match(tag):
        return None
    first, *rest = tag.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())  # region
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())  # script
        else:
            parts.append(part.lower())
    return "-".join(parts)
