"""The optional compiled accelerator (lilush_http/accelerator.py): which modules
are loaded, and that LILUSH_HTTP_PURE_PYTHON=1 really runs the pure Python ones.

CI runs the suite twice, compiled and with LILUSH_HTTP_PURE_PYTHON=1 (.ci/run);
there the twins must have been built by ``make test``'s install.
"""

import importlib.util
import os
import subprocess
import sys
import time
import warnings

import pytest

import lilush_http.request
import lilush_http.response
from lilush_http import accelerator
from conftest import REQUIRE_PROGRAMS

ACCELERATED = ("request", "response")
BUILT = all(importlib.util.find_spec("lilush_http._compiled." + name) is not None for name in ACCELERATED)
LOADED = "import lilush_http.request as q, lilush_http.response as s; print(q.__file__); print(s.__file__)"


def need_built():
    if not BUILT:
        if REQUIRE_PROGRAMS:
            pytest.fail("the compiled accelerator was not built (Cython and a C compiler are in CI)")
        pytest.skip("the compiled accelerator is not built here")


def loaded_files(pure):
    env = dict(os.environ)
    env.pop("LILUSH_HTTP_PURE_PYTHON", None)
    if pure:
        env["LILUSH_HTTP_PURE_PYTHON"] = "1"
    out = subprocess.run([sys.executable, "-c", LOADED], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_pure_python_switch_loads_the_py_files():
    request_file, response_file = loaded_files(pure=True)
    assert request_file.endswith(os.path.join("lilush_http", "request.py"))
    assert response_file.endswith(os.path.join("lilush_http", "response.py"))


def test_compiled_twins_are_loaded_by_default_when_built():
    need_built()
    for path, name in zip(loaded_files(pure=False), ACCELERATED):
        assert os.path.join("lilush_http", "_compiled", name + ".") in path
        assert not path.endswith(".py")


def test_this_run_uses_what_its_environment_asks_for():
    """The suite itself runs on the compiled modules, or on the pure ones under the switch."""
    want_compiled = BUILT and not accelerator.PURE_PYTHON
    assert accelerator.compiled(lilush_http.request) == want_compiled
    assert accelerator.compiled(lilush_http.response) == want_compiled
    if not want_compiled:
        assert lilush_http.request.__file__.endswith("request.py")


def test_one_module_object_under_both_names():
    """Every importer sees the same classes: an HTTPError raised by the parser is
    the one the connection code catches."""
    from lilush_http.protocols import http1
    assert http1.HTTPError is lilush_http.request.HTTPError
    assert http1.parse_head is lilush_http.request.parse_head
    assert http1.render is lilush_http.response.render
    with pytest.raises(http1.HTTPError) as caught:
        http1.parse_head(b"GET / HTTP/1.1\r\n\r\n", lilush_http.request.Limits())
    assert caught.value.status == 400


def test_a_twin_older_than_its_source_is_not_used(tmp_path, monkeypatch):
    need_built()
    monkeypatch.setattr(accelerator, "PURE_PYTHON", False)  # the check runs only when twins may be used
    source = tmp_path / "request.py"
    source.write_text("# edited after the build\n")
    future = time.time() + 3600
    os.utime(source, (future, future))
    before = sys.modules["lilush_http.request"]
    sys.modules["lilush_http.request"] = pure = object()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            accelerator.use_compiled("lilush_http.request", str(source))
        assert sys.modules["lilush_http.request"] is pure  # left as it was
        assert any("older than" in str(w.message) for w in caught)
    finally:
        sys.modules["lilush_http.request"] = before
