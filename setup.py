"""Packaging (the metadata is in setup.cfg), and the optional compiled accelerator:
lilush_http/request.py and response.py compiled by Cython into
lilush_http._compiled when Cython and a C compiler are there (see
lilush_http/accelerator.py). Without either, or with LILUSH_HTTP_PURE_PYTHON=1
set while installing, the package installs as pure Python."""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ACCELERATED = ("request", "response")


class OptionalBuildExt(build_ext):
    """Build the compiled twins; any failure (no compiler, no headers) leaves pure Python."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            print("lilush_http: compiled accelerator not built (%s); pure Python" % exc, file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print("lilush_http: %s not built (%s); pure Python" % (ext.name, exc), file=sys.stderr)


def extensions():
    """The Cython extensions, or none when they cannot or must not be built."""
    if os.environ.get("LILUSH_HTTP_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("lilush_http: Cython is not installed; pure Python", file=sys.stderr)
        return []
    modules = [Extension("lilush_http._compiled." + name, ["lilush_http/%s.py" % name]) for name in ACCELERATED]
    try:
        return cythonize(modules, language_level=3, quiet=True)
    except Exception as exc:
        print("lilush_http: Cython could not compile (%s); pure Python" % exc, file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
