"""Compiled twins of the hot sans-I/O modules (see lilush_http/accelerator.py).

setup.py builds ``lilush_http/request.py`` and ``response.py`` with Cython into
this package, with the C types declared in the ``.pxd`` files here; the ``.py``
files stay the one source. Nothing imports this package directly.
"""
