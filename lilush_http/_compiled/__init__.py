"""Compiled twins of the hot sans-I/O modules (see lilush_http/accelerator.py).

setup.py builds ``lilush_http/request.py`` and ``response.py`` with Cython into
this package: the ``.py`` files stay the one source. No ``.pxd`` declarations:
typing the parser's locals and classes measured no fewer instructions than
compiling it as it is (callgrind, 10,000 parses and renders).
"""
