# make run: serve the current directory on 127.0.0.1:8080.  make test: the test suite.
# make bench: the side-by-side benchmark (see bench/run.py).
# Both create the virtualenv (.venv) and install into it when needed.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: run test bench clean

# The install also builds the compiled accelerator (setup.py): redone when its sources change.
$(STAMP): setup.cfg setup.py pyproject.toml lilush_http/request.py lilush_http/response.py $(wildcard lilush_http/_compiled/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lilush-http --ip 127.0.0.1 --port 8080

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# make bench: lilush_http against granian, pywsgi, gunicorn -k gevent and uvicorn (wrk on loopback);
# bench/websocket_echo.py: WebSocket echo against gevent-websocket and the websockets library.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/websocket_echo.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
