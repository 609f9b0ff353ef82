"""Is one generated line Python, and if not, why: the interpreter's own :mod:`tokenize` (an oracle nobody
here wrote) and a bracket / quote scan.

:func:`tokenizes` is the judged rule; :func:`balanced` a stricter-to-read companion; :func:`line_fault`
sorts every line into exactly one of :data:`FAULTS`, so a decoder's failures can be read by cause
(a bracket left open by a line cut short, a quote never closed, …) rather than as one rate.
"""
from __future__ import annotations

import io
import tokenize

__all__ = ["tokenizes", "balanced", "bracket_fault", "line_fault", "FAULTS"]

_TOKENIZE_FAILURES = (tokenize.TokenError, IndentationError, SyntaxError)
_CLOSING = {")": "(", "]": "[", "}": "{"}

#: :func:`line_fault`'s answers, in the order it tries them: the first holds when the line tokenizes, the
#: next three are :func:`bracket_fault`'s, and the last is every other reason tokenize refuses a line
#: (a stray character such as ``$``, an unexpected indent, a trailing backslash, …)
FAULTS = ("tokenizes", "mismatched bracket", "open string", "open bracket", "other")


def tokenizes(line: str) -> bool:
    """True iff Python's own :mod:`tokenize` accepts ``line`` as a whole source text.

    The exact rule: ``list(tokenize.generate_tokens(io.StringIO(line).readline))`` raises none of
    TokenError, IndentationError, SyntaxError and yields no ERRORTOKEN. The line is the *whole*
    source, so a line that leaves a bracket open (``foo(a,``, a real first line of a call spread
    over several) fails with "EOF in multi-line statement", as do an unmatched closing bracket,
    an unterminated triple-quoted string and a trailing backslash; an unterminated one-line string
    or a stray character (``$``, ``?``) is an ERRORTOKEN on Python ≤ 3.11 and an error on 3.12+, a
    failure either way. Only tokens are checked, not grammar: ``else:`` alone tokenizes. Nor is a
    bracket's kind on Python ≤ 3.11, whose tokenizer counts depth only (``(a]`` passes there, and
    fails on 3.12+); :func:`bracket_fault` checks kinds everywhere.
    """
    try:
        return all(t.type != tokenize.ERRORTOKEN for t in tokenize.generate_tokens(io.StringIO(line).readline))
    except _TOKENIZE_FAILURES:
        return False


def bracket_fault(line: str) -> str | None:
    """The first bracket or quote fault of ``line`` (``"mismatched bracket"``, ``"open string"`` or
    ``"open bracket"``), or None when it is balanced.

    A scan from the left: outside a string, ``#`` starts a comment (the rest is ignored), a quote
    (``'``, ``"``, or three of one) opens a string, brackets push and pop, and a closing bracket that
    does not close the last open one of its kind is a mismatch (found where it stands); inside a
    string a backslash escapes the next character and only the opening quote sequence closes it. At
    the end an open string is reported before open brackets. Prefixes (r, b, f) are ordinary
    characters here, so a raw string ending in a backslash counts as open.
    """
    stack: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i, quote = i + len(quote), None
                continue
        elif c == "#":
            break
        elif c in "'\"":
            quote = c * 3 if line.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c in "([{":
            stack.append(c)
        elif c in _CLOSING and (not stack or stack.pop() != _CLOSING[c]):
            return "mismatched bracket"
        i += 1
    if quote is not None:
        return "open string"
    return "open bracket" if stack else None


def balanced(line: str) -> bool:
    """True iff every bracket outside strings and comments is closed by its own kind in order and
    every string literal is closed by the end of the line (:func:`bracket_fault` finds nothing)."""
    return bracket_fault(line) is None


def line_fault(line: str) -> str:
    """The one entry of :data:`FAULTS` that describes ``line``: ``"tokenizes"`` when :func:`tokenizes`
    accepts it, else its :func:`bracket_fault`, else ``"other"``."""
    if tokenizes(line):
        return "tokenizes"
    return bracket_fault(line) or "other"
