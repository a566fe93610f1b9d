"""Charts of a benchmark run: req/s and server CPU per request, per scenario and server.

Reads the first table of ``bench/results.md`` (written by ``bench/run.py``) and writes
``docs/images/bench-rps.svg`` and ``docs/images/bench-cpu.svg`` (``make bench`` runs it).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER_ORDER = ["lilush_http", "bare", "granian", "uvicorn", "gunicorn", "pywsgi"]


def read_results(path):
    """``(scenarios in order, {(scenario, server): (req/s, CPU us/req)})`` from the first
    ``| scenario | server | req/s | ...`` table of the markdown file."""
    scenarios, figures = [], {}
    in_table = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[:3] == ["scenario", "server", "req/s"]:
                if figures:
                    break  # only the first table: the latest run
                in_table = True
                columns = cells
                continue
            if not in_table:
                continue
            if not line.startswith("|"):
                break
            if cells[0].startswith("---"):
                continue
            row = dict(zip(columns, cells))
            scenario = row["scenario"]
            if scenario not in scenarios:
                scenarios.append(scenario)
            figures[(scenario, row["server"])] = (float(row["req/s"]), float(row["server CPU us/req"]))
    return scenarios, figures


def draw(scenarios, figures, index, ylabel, title, path):
    """A grouped bar chart (log scale) of figure ``index`` (0: req/s, 1: CPU us/req)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "lilush_http", "font.size": 9})
    servers = [s for s in SERVER_ORDER if any(k[1] == s for k in figures)]
    servers += sorted({k[1] for k in figures} - set(servers))
    width = 0.8 / len(servers)
    figure, axes = pyplot.subplots(figsize=(11, 4.6))
    for n, server in enumerate(servers):
        xs = [i + (n - (len(servers) - 1) / 2) * width for i, s in enumerate(scenarios) if (s, server) in figures]
        ys = [figures[(s, server)][index] for s in scenarios if (s, server) in figures]
        axes.bar(xs, ys, width, label=server)
    axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.set_xticks(range(len(scenarios)))
    axes.set_xticklabels([_wrap(s) for s in scenarios])
    axes.grid(axis="y", which="major", alpha=0.3)
    axes.legend(ncol=len(servers), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    pyplot.close(figure)


def _wrap(label, width=13):
    """A scenario name on short lines under its bars."""
    words, lines = label.split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + len(word) > width:
            lines.append("")
        lines[-1] = (lines[-1] + " " + word).strip()
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results.md"))
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "images"), help="directory for the SVGs")
    args = parser.parse_args(argv)
    scenarios, figures = read_results(args.results)
    if not figures:
        print("no benchmark table in %s" % args.results, file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    draw(scenarios, figures, 0, "requests per second (log scale)", "Requests per second, higher is better",
         os.path.join(args.output, "bench-rps.svg"))
    draw(scenarios, figures, 1, "server CPU µs per request (log scale)", "Server CPU per request, lower is better",
         os.path.join(args.output, "bench-cpu.svg"))
    print("wrote bench-rps.svg and bench-cpu.svg in %s" % args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
