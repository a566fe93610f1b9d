# make run: serve the current directory on 127.0.0.1:8080.  make test: the test suite.
# make bench: the side-by-side benchmark (see bench/run.py) and its charts.
# make docs: the documentation site in docs/_build/html (warnings are errors).
# Both create the virtualenv (.venv) and install into it when needed.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: run test bench docs clean

# The install also builds the compiled accelerator (setup.py): redone when its sources change.
$(STAMP): setup.cfg setup.py pyproject.toml lilush_http/request.py lilush_http/response.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lilush-http --ip 127.0.0.1 --port 8080

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# make bench: lilush_http against granian, pywsgi, gunicorn -k gevent and uvicorn (wrk on loopback);
# bench/websocket_echo.py: WebSocket echo against gevent-websocket and the websockets library;
# bench/http2.py: HTTP/2 (h2load) against hypercorn, gunicorn's gevent worker and granian.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/websocket_echo.py
	$(BIN)/python bench/charts.py
	$(BIN)/python bench/http2.py

# -W: any warning fails, -n: every reference must resolve; then every internal link and
# image of the built pages is checked (no network: external links are not visited).
docs: $(STAMP)
	rm -rf docs/_build/html
	$(BIN)/python -m sphinx -W -n --keep-going -q -b html docs docs/_build/html
	$(BIN)/python docs/_ext/internal_links.py docs/_build/html

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache docs/_build docs/_generated
