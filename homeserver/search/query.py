"""The search term language of POST /search, parsed into an engine-neutral form.

The syntax follows what people type into web search boxes (and what PostgreSQL's
websearch_to_tsquery accepts), so both engines give the same answers:

- ``word`` matches words that start with it (``mart`` finds "martians");
- ``"two words"`` matches the words next to each other, in order, exactly;
- ``-word`` / ``-"two words"`` excludes events that contain it;
- ``OR`` between groups of terms matches either group; terms side by side must all match.

Anything else is punctuation and separates words, so no input is a syntax error.
storage/search.py renders a ``SearchQuery`` as an FTS5 MATCH expression or a tsquery.
"""

from __future__ import annotations

import re

from homeserver.search.text import words
from storage.search import Clause, SearchQuery, Term

MAX_TERMS = 32

# A quoted phrase (the closing quote may be missing) or a run of non-space characters,
# either one optionally negated.
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def highlights(query: SearchQuery) -> list[str]:
    """The words a client should highlight in results: every word searched for."""
    seen: dict[str, None] = {}
    for clause in query.clauses:
        for term in clause.include:
            for w in term.words:
                seen.setdefault(w, None)
    return list(seen)


def parse_query(search_term: str) -> SearchQuery:
    clauses: list[Clause] = []
    include: list[Term] = []
    exclude: list[Term] = []
    count = 0

    def close_clause() -> None:
        # A clause of exclusions only would match nearly everything: it is dropped.
        if include:
            clauses.append(Clause(tuple(include), tuple(exclude)))
        include.clear()
        exclude.clear()

    for m in _TOKEN.finditer(search_term):
        negated, phrase, bare = m.group(1), m.group(2), m.group(3)
        if bare == "OR":
            close_clause()
            continue
        if phrase is not None:
            term_words, prefix = words(phrase), False
        else:
            negated = "-" if bare.startswith("-") and len(bare) > 1 else ""
            term_words, prefix = words(bare), not negated
        if not term_words:
            continue
        count += 1
        if count > MAX_TERMS:
            break
        (exclude if negated else include).append(Term(tuple(term_words), prefix))
    close_clause()
    return SearchQuery(tuple(clauses))
