"""Untrusted text (prompts, completions, guidelines) to HTML that cannot run anything.

Two layers. Python-Markdown is told to treat raw HTML as text (its html_block
and inline html handlers are removed), so `<script>` or `<img onerror=...>` in a
completion is shown literally, as the annotator must see what the model wrote.
nh3 (ammonia) then keeps only formatting tags, drops every attribute but a
link's href/title, and drops hrefs that are not http(s)/mailto, which is what
stops `[x](javascript:...)` links.
"""

import functools
import threading

import markdown
import nh3

_TAGS = {
    "p", "br", "hr", "pre", "code", "em", "strong", "del", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}}
_URL_SCHEMES = {"http", "https", "mailto"}

# Markdown instances are not thread-safe and cost ~1 ms to build: one per thread, reset per use.
_local = threading.local()


def _markdown() -> markdown.Markdown:
    md = getattr(_local, "md", None)
    if md is None:
        md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists", "nl2br"])
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        _local.md = md
    return md.reset()


# Each pair is shown to N annotators and each prompt heads several pairs, so the same
# text comes back often; rendering is pure, and costs ~0.2 ms a short text.
@functools.lru_cache(maxsize=1024)
def markdown_to_safe_html(text: str) -> str:
    html = _markdown().convert(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
