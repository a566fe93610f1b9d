"""``python -m lilush_http``: the same as the ``lilush-http`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
