"""Sphinx configuration of the lilush_http documentation (``make docs``)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # lilush_http, for autodoc and the generated pages
sys.path.insert(0, os.path.join(HERE, "_ext"))

import lilush_http  # noqa: E402

project = "lilush_http"
copyright = "lilush_http contributors"
release = version = lilush_http.__version__

extensions = ["sphinx.ext.autodoc", "lilush_docs"]
nitpicky = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"
exclude_patterns = ["_build", "_generated"]
templates_path = []
html_theme = "furo"
html_title = "lilush_http %s" % release
html_static_path = []
html_show_sourcelink = False
pygments_style = "sphinx"
highlight_language = "none"  # literal blocks are output; code says its language
smartquotes = False  # --flags and "quotes" stay as typed
