"""OpenGraph data from an HTML page: og:* meta tags, with <title> and the description as fallbacks.

Runs in a thread (a page may be megabytes). Values are trimmed and counted so a hostile page
cannot make a preview response of unbounded size.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

MAX_TAGS = 50
MAX_VALUE = 1000
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-:.]+)""", re.I)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.description: str | None = None
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta":
            key = (a.get("property") or a.get("name") or "").strip()
            content = a.get("content", "").strip()
            if key.startswith("og:") and key not in self.og and len(self.og) < MAX_TAGS and content:
                self.og[key] = content[:MAX_VALUE]
            elif key.lower() == "description" and self.description is None and content:
                self.description = content[:MAX_VALUE]
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:MAX_VALUE] or None

    def handle_data(self, data: str) -> None:
        if self._in_title and sum(map(len, self._title_parts)) < MAX_VALUE:
            self._title_parts.append(data)


def _charset(body: bytes, content_type: str | None) -> str:
    candidates = []
    if content_type:
        m = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_\-:.]+)", content_type, re.I)
        if m:
            candidates.append(m.group(1))
    m = _CHARSET.search(body[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii"))
    for name in candidates:
        try:
            return codecs.lookup(name).name
        except LookupError:
            continue
    return "utf-8"


def parse_html(body: bytes, content_type: str | None, url: str) -> dict[str, Any]:
    """The page's OpenGraph properties; og:image and og:url are made absolute."""
    parser = _Parser()
    try:
        parser.feed(body.decode(_charset(body, content_type), errors="replace"))
        parser.close()
    except Exception:  # html.parser is lenient, but a malformed page must not fail a preview
        pass
    og: dict[str, Any] = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    for key in ("og:image", "og:url", "og:image:url", "og:image:secure_url"):
        if key in og:
            og[key] = urljoin(url, og[key])
    if "og:image" not in og:
        for alt in ("og:image:secure_url", "og:image:url"):
            if alt in og:
                og["og:image"] = og[alt]
                break
    for key in ("og:image:width", "og:image:height"):
        if key in og:
            og[key] = int(og[key]) if str(og[key]).isdigit() and len(og[key]) < 10 else None
            if og[key] is None:
                del og[key]
    return og
