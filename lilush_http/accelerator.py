"""The optional compiled accelerator: the hot sans-I/O modules, compiled by Cython
from their own ``.py`` source into ``lilush_http._compiled``, replace the pure
Python ones at import when they were built and ``LILUSH_HTTP_PURE_PYTHON`` is not set.

The twins have their own names, so a built extension never shadows the ``.py``
file: the switch below is the only way in, and turning it off really runs the
pure Python code.
"""

import importlib
import os
import sys
import warnings

PURE_PYTHON = os.environ.get("LILUSH_HTTP_PURE_PYTHON", "") not in ("", "0")
PACKAGE = "lilush_http"
TWINS = PACKAGE + "._compiled"


def use_compiled(name, source):
    """Make ``sys.modules[name]`` the compiled twin of module ``name`` (whose file is
    ``source``) when it is built, allowed and not older than the source."""
    if PURE_PYTHON:
        return
    try:
        twin = importlib.import_module(TWINS + name[len(PACKAGE):])
    except ImportError:
        return  # not built: no compiler or no Cython at install time
    if os.path.getmtime(twin.__file__) < os.path.getmtime(source):
        warnings.warn("%s: the compiled twin is older than %s; using pure Python (reinstall to rebuild)"
                      % (name, source), RuntimeWarning, stacklevel=2)
        return
    sys.modules[name] = twin


def compiled(module):
    """True when ``module`` (a lilush_http module object) is a compiled twin."""
    return module.__name__.startswith(TWINS + ".")
