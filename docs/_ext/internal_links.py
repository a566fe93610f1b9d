"""Check a built HTML site without the network: every internal link leads to a file that
exists (and to an element with that id, for a #fragment), and every image is there.

    python docs/_ext/internal_links.py docs/_build/html
"""

import os
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    """The ids, the links (a href, link href) and the images (img src, object data) of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.images = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag in ("a", "link") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "object" and attrs.get("data"):
            self.images.append(attrs["data"])
        if tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])


def _read(path, cache):
    if path not in cache:
        page = _Page()
        with open(path, encoding="utf-8") as f:
            page.feed(f.read())
        cache[path] = page
    return cache[path]


def problems(root):
    """``["page: what is broken", ...]`` for the site under ``root`` (empty when all is well)."""
    found, cache, pages = [], {}, 0
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".html"):
                continue
            pages += 1
            path = os.path.join(folder, name)
            page = _read(path, cache)
            where = os.path.relpath(path, root)
            for kind, targets in (("link", page.links), ("image", page.images)):
                for target in targets:
                    err = _check(path, target, kind, cache)
                    if err:
                        found.append("%s: %s" % (where, err))
    if pages == 0:
        found.append("no HTML pages under %s" % root)
    return found


def _check(page_path, target, kind, cache):
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:  # external (http:, mailto:, data:): not visited
        return None
    file_part = unquote(parts.path)
    path = page_path if not file_part else os.path.normpath(os.path.join(os.path.dirname(page_path), file_part))
    if os.path.isdir(path):
        path = os.path.join(path, "index.html")
    if not os.path.isfile(path):
        return "broken %s %s" % (kind, target)
    if kind == "image" and os.path.getsize(path) == 0:
        return "empty image %s" % target
    if parts.fragment and path.endswith(".html") and unquote(parts.fragment) not in _read(path, cache).ids:
        return "no #%s in %s" % (parts.fragment, os.path.basename(path))
    return None


if __name__ == "__main__":
    broken = problems(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    print("\n".join(broken) or "internal links and images: all present")
    sys.exit(1 if broken else 0)
