"""The search language, shared by every store, the CLI and the web page.

``timeout "connection refused" -debug``, ``error OR warn``, ``NOT healthz``, ``(db OR cache) AND slow``:
words and "exact phrases" match a line that contains them anywhere, whatever their case (``refused``
finds ``Refused``, ``数据库`` finds ``连接数据库失败``, ``/api/v1`` finds a path); juxtaposed terms must all
match; ``OR``, ``AND``, ``NOT`` (or a leading ``-``) and parentheses combine them, NOT binding tightest,
then AND, then OR. A store turns the parsed tree into its own query (``to_fts5``, ``to_sql``);
``highlight`` marks where a record matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipline.errors import ConfigError

MAX_QUERY = 1000


@dataclass(frozen=True, slots=True)
class Term:
    text: str


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node = Term | Not | And | Or

_TOKEN = re.compile(r'\s*(?:(")((?:[^"]|"")*)("?)|(\()|(\))|(-(?=\S))|([^\s()"]+))')


class QueryError(ConfigError):
    """A search query that cannot be read."""


def parse(text: str) -> Node:
    """The tree of a query.

    Raises:
        QueryError: for an empty query, an unclosed quote or parenthesis, or a dangling operator —
            saying where.
    """
    if len(text) > MAX_QUERY:
        raise QueryError(f"the query is {len(text)} characters long; at most {MAX_QUERY}")
    tokens = _tokens(text)
    if not tokens:
        raise QueryError("empty query", hint="give a word or a quoted phrase to search for")
    parser = _Parser(tokens, text)
    node = parser.or_expr()
    if parser.pos < len(tokens):
        _, value = tokens[parser.pos]
        raise QueryError(f"unexpected {value!r} in query {text!r}", hint=_HINT)
    if not positive_terms(node):
        raise QueryError(
            f"query {text!r} only excludes", hint="add a word the lines must contain, e.g. 'error -debug'"
        )
    return node


_HINT = 'combine words with AND, OR, NOT and parentheses; quote "exact phrases"'


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the pattern accepts every character
            raise QueryError(f"cannot read the query at {text[pos:]!r}")
        pos = match.end()
        quote, phrase, closing, lparen, rparen, minus, word = match.groups()
        if quote:
            if not closing:
                raise QueryError(f"unclosed quote in query {text!r}", hint=_HINT)
            phrase = phrase.replace('""', '"')
            if phrase.strip():
                tokens.append(("term", phrase))
        elif lparen:
            tokens.append(("(", "("))
        elif rparen:
            tokens.append((")", ")"))
        elif minus:
            tokens.append(("not", "-"))
        elif word in {"AND", "OR", "NOT"}:
            tokens.append((word.lower(), word))
        else:
            tokens.append(("term", word))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.peek() == "or":
            self.pos += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.peek() in {"and", "term", "not", "("}:
            if self.peek() == "and":
                self.pos += 1
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        kind = self.peek()
        if kind == "not":
            self.pos += 1
            return Not(self.unary())
        if kind == "term":
            value = self.tokens[self.pos][1]
            self.pos += 1
            return Term(value)
        if kind == "(":
            self.pos += 1
            node = self.or_expr()
            if self.peek() != ")":
                raise QueryError(f"unclosed parenthesis in query {self.text!r}", hint=_HINT)
            self.pos += 1
            return node
        found = "the end" if kind is None else repr(self.tokens[self.pos][1])
        raise QueryError(
            f"expected a word, a phrase or '(' but found {found} in query {self.text!r}", hint=_HINT
        )


def terms(node: Node) -> list[str]:
    """Every term of the query, in order."""
    if isinstance(node, Term):
        return [node.text]
    if isinstance(node, Not):
        return terms(node.item)
    return [t for item in node.items for t in terms(item)]


def positive_terms(node: Node, negated: bool = False) -> list[str]:
    """Terms whose presence makes a line match (not under an odd number of NOTs): what to highlight."""
    if isinstance(node, Term):
        return [] if negated else [node.text]
    if isinstance(node, Not):
        return positive_terms(node.item, not negated)
    return [t for item in node.items for t in positive_terms(item, negated)]


def matches(node: Node, message: str) -> bool:
    """Whether ``message`` matches: the meaning every store implements (case-insensitive substrings)."""
    folded = message.casefold()

    def visit(n: Node) -> bool:
        if isinstance(n, Term):
            return n.text.casefold() in folded
        if isinstance(n, Not):
            return not visit(n.item)
        if isinstance(n, And):
            return all(visit(i) for i in n.items)
        return any(visit(i) for i in n.items)

    return visit(node)


def to_sql(node: Node, leaf: Callable[[str], tuple[str, list[object]]]) -> tuple[str, list[object]]:
    """A SQL condition for the tree, ``leaf(term)`` giving each term's condition and parameters."""
    if isinstance(node, Term):
        return leaf(node.text)
    if isinstance(node, Not):
        sql, params = to_sql(node.item, leaf)
        return f"NOT ({sql})", params
    parts = [to_sql(item, leaf) for item in node.items]
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]]


def to_fts5(node: Node, *, min_term: int = 0) -> str | None:
    """An FTS5 MATCH expression with the same meaning, or None where FTS5 cannot say it.

    FTS5 has no unary NOT (only ``a NOT b``), and its trigram index cannot look up a term shorter than
    ``min_term`` characters; such queries are answered by a scan instead.
    """

    def visit(n: Node) -> str | None:
        if isinstance(n, Term):
            if len(n.text) < min_term:
                return None
            return '"' + n.text.replace('"', '""') + '"'
        if isinstance(n, Not):
            return None
        if isinstance(n, Or):
            parts = [visit(i) for i in n.items]
            return None if None in parts else "(" + " OR ".join(p for p in parts if p) + ")"
        positive = [i for i in n.items if not isinstance(i, Not)]
        negative = [i.item for i in n.items if isinstance(i, Not)]
        if not positive:
            return None
        left = [visit(i) for i in positive]
        right = [visit(i) for i in negative]
        if None in left or None in right:
            return None
        expr = "(" + " AND ".join(p for p in left if p) + ")"
        for part in right:
            expr = f"({expr} NOT {part})"
        return expr

    return visit(node)


def to_trigram_candidates(node: Node) -> str | None:
    """An FTS5 expression over a ``detail=none`` trigram index that every matching line satisfies (and a few
    others): each term becomes its trigrams, all required; ``NOT`` and terms under three characters
    require nothing. None where nothing can be required (the caller scans). The caller checks each
    candidate against the query itself (``matches``/``to_sql``) — the index only narrows the rows.
    """

    def visit(n: Node) -> str | None:
        if isinstance(n, Term):
            folded = n.text
            grams = list(dict.fromkeys(folded[i : i + 3] for i in range(len(folded) - 2)))
            if not grams:
                return None
            return "(" + " AND ".join('"' + g.replace('"', '""') + '"' for g in grams) + ")"
        if isinstance(n, Not):
            return None
        parts = [visit(i) for i in n.items]
        if isinstance(n, Or):
            return None if None in parts else "(" + " OR ".join(p for p in parts if p) + ")"
        required = [p for p in parts if p]
        return "(" + " AND ".join(required) + ")" if required else None

    return visit(node)


def highlight(message: str, words: Sequence[str]) -> list[tuple[str, bool]]:
    """``message`` cut into (text, matched) pieces, the matched ones being occurrences of ``words``."""
    folded = message.casefold()
    if len(folded) != len(message):  # casefold changed lengths (ß → ss): mark nothing rather than wrongly
        return [(message, False)]
    marks = [False] * len(message)
    for word in words:
        needle = word.casefold()
        if not needle:
            continue
        start = folded.find(needle)
        while start >= 0:
            for i in range(start, start + len(needle)):
                marks[i] = True
            start = folded.find(needle, start + 1)
    pieces: list[tuple[str, bool]] = []
    for char, marked in zip(message, marks, strict=True):
        if pieces and pieces[-1][1] == marked:
            pieces[-1] = (pieces[-1][0] + char, marked)
        else:
            pieces.append((char, marked))
    return pieces
