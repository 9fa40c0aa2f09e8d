"""Pull final answers out of worked solutions (``\\boxed{}``, GSM8K's ``####``, choice letters)."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def last_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces handled), or None."""
    if not text:
        return None
    matches = list(_BOXED.finditer(text))
    for m in reversed(matches):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
                j += 1
        elif i < len(text):  # "\boxed 5" form
            tail = text[i:].split("$")[0].split()
            if tail:
                return tail[0].strip()
    return None


def gsm8k_answer(text: str | None) -> str | None:
    """GSM8K's final answer: what follows ``####``, thousands separators removed."""
    if not text or "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def choice_letter(index: int) -> str:
    if not 0 <= index < 26:
        raise ValueError(f"choice index {index} out of range")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]
