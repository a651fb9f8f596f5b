"""Reflection parsing and error localization (docs/method.md, "Reflection" and "Token mask"): pure
functions over strings and ids."""

from __future__ import annotations

import re
from dataclasses import dataclass


def _tag(name: str) -> re.Pattern:
    return re.compile(rf"<{name}>(.*?)</{name}>", re.IGNORECASE | re.DOTALL)


_QUOTE = _tag("error_quote")
# The reference's order: its own spelling "explaination", then "explanation" (the tag its prompts
# ask for), then "reflection"; each searched on its own, an empty match falls through to the next.
_EXPLANATION_TAGS = tuple(_tag(name) for name in ("explaination", "explanation", "reflection"))


@dataclass(frozen=True)
class Reflection:
    error_quote: str | None
    explanation: str | None

    @property
    def parsed(self) -> bool:
        """A reflection parses when it yields an explanation (the part the teacher reads)."""
        return self.explanation is not None


def _first(pattern: re.Pattern, text: str) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    return match.group(1).strip() or None


def parse_reflection(text: str) -> Reflection:
    """The first ``<error_quote>`` and the first non-empty explanation tag (see above),
    case-insensitive, stripped; empty counts as absent."""
    explanation = next((found for pattern in _EXPLANATION_TAGS if (found := _first(pattern, text))), None)
    return Reflection(error_quote=_first(_QUOTE, text), explanation=explanation)


def find_quote(response: str, quote: str | None) -> int | None:
    """Character offset of the quote's first occurrence in the response, or None.

    As the reference: ``str.find`` of the quote, then of the quote stripped of surrounding white space.
    """
    if not quote:
        return None
    for candidate in (quote, quote.strip()):
        if candidate:
            at = response.find(candidate)
            if at != -1:
                return at
    return None


def token_at_char(tokenizer, response_ids: list[int], char_offset: int) -> int:
    """Index of the sampled token that holds character ``char_offset`` of the decoded response.

    Exact: decoded prefix lengths of the sampled ids themselves grow monotonically, so a binary
    search finds the first token whose prefix reaches past the offset.
    """
    lo, hi = 0, len(response_ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(response_ids[: mid + 1], skip_special_tokens=False)) > char_offset:
            hi = mid
        else:
            lo = mid + 1
    return min(lo, max(len(response_ids) - 1, 0))


def token_at_char_retokenized(tokenizer, response: str, char_offset: int) -> int:
    """The reference's mapping: the number of tokens in the re-tokenized text before the quote."""
    return len(tokenizer(response[:char_offset], add_special_tokens=False)["input_ids"])


def char_token(tokenizer, response: str, response_ids: list[int], char_offset: int, mapping: str = "offsets") -> int:
    """The response token where character ``char_offset`` starts, by the quote mapping
    (``reflection.quote_mapping``): exact on the sampled ids, or the reference's re-tokenization."""
    if mapping == "retokenize":
        return min(token_at_char_retokenized(tokenizer, response, char_offset), len(response_ids))
    return token_at_char(tokenizer, response_ids, char_offset)


def loss_start(tokenizer, response: str, response_ids: list[int], quote: str | None, mapping: str = "offsets") -> int:
    """First response token that carries loss: the quote's first token when found, else 0."""
    at = find_quote(response, quote)
    if at is None:
        return 0
    return char_token(tokenizer, response, response_ids, at, mapping)
