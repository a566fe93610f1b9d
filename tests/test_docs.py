"""The documentation: built with Sphinx as ``make docs`` builds it (warnings are errors),
its settings and command-line pages complete against the code, its code all from
docs/examples/ (run by test_examples.py), its internal links and images present, and
its pages and search working in headless Chromium."""

import html
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import HeadlessChromium
from lilush_http import cli, config, static

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.rst"
sys.path.insert(0, str(DOCS / "_ext"))

import internal_links  # noqa: E402
import lilush_docs  # noqa: E402

pytest.importorskip("sphinx")
pytest.importorskip("furo")


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """The HTML site, built afresh as ``make docs`` builds it: any warning fails."""
    out = tmp_path_factory.mktemp("html")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
                           str(DOCS), str(out)], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_build_has_every_page(built_docs):
    toctree = re.search(r"\.\. toctree::(.*)", (DOCS / "index.rst").read_text(), re.S).group(1)
    pages = {path.stem for path in DOCS.glob("*.rst")} - {"index"}
    listed = set(re.findall(r"^   ([a-z0-9-]+)$", toctree, re.M))
    assert listed == pages  # no page left out of the navigation
    for page in pages | {"index", "search", "genindex"}:
        assert (built_docs / (page + ".html")).is_file(), page


def test_internal_links_and_images_are_present(built_docs):
    assert internal_links.problems(str(built_docs)) == []
    assert 'src="_images/bench-rps.svg"' in (built_docs / "benchmarks.html").read_text()


def test_the_link_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "a.html").write_text('<p id="here"><a href="b.html#nowhere">x</a><a href="#here">y</a>'
                                     '<a href="gone.html">z</a><img src="missing.svg">'
                                     '<a href="https://example.com/">out</a></p>')
    (tmp_path / "b.html").write_text('<p id="there"></p>')
    assert sorted(internal_links.problems(str(tmp_path))) == [
        "a.html: broken image missing.svg", "a.html: broken link gone.html", "a.html: no #nowhere in b.html"]


def test_every_setting_has_a_meaning_and_a_validation():
    for key, _ in config.flat():
        assert config.MEANINGS.get(key, "").strip(), "config.MEANINGS has nothing for %s" % key
        assert lilush_docs.accepts(key), "config.validate does not report a wrong %s" % key
    assert set(config.MEANINGS) == {key for key, _ in config.flat()}  # no meaning of a key that is gone


def test_settings_page_shows_every_key(built_docs):
    page = (built_docs / "settings.html").read_text()
    for key, default in config.flat():
        anchor = lilush_docs.anchor(key)
        section = page[page.index('id="%s"' % anchor):]
        section = section[:section.index("</section>")]
        text = html.unescape(re.sub(r"<[^>]+>", "", section))
        squeezed = re.sub(r"\s+", "", text)
        meaning = re.sub(r"\s+", "", re.sub(r":\w+:`([^`<]*)[^`]*`|``", r"\1", config.MEANINGS[key]))
        assert key in text and meaning[:20] in squeezed, key
        assert "Default:" + re.sub(r"\s+", "", json.dumps(default)) in squeezed, key
        assert "Accepts:" + re.sub(r"\s+", "", lilush_docs.accepts(key)) in squeezed, key
    assert "--unix-socket-mode" in page and "--compression-level" in page


def is_table_or_list(key, default):
    return isinstance(default, (list, dict)) or any(word in lilush_docs.accepts(key) for word in ("table", "list"))


def test_every_scalar_key_has_a_flag():
    flags = lilush_docs.flags()
    for key, default in config.flat():
        if not is_table_or_list(key, default):
            assert key in flags, "no command-line flag sets %s" % key


@pytest.mark.parametrize("key, default", [(k, d) for k, d in config.flat()
                                          if type(d) in (int, float, str, bool) and k not in cli.OWN_FLAGS])
def test_each_generated_flag_sets_its_key(key, default):
    flag = lilush_docs.flags()[key][0]
    value = json.dumps(default) if type(default) is bool else str(default)
    built, err = cli.build_config(cli.parse_args([flag, value]))
    assert err is None
    *path, last = key.split(".")
    for part in path:
        built = built[part]
    assert built[last] == default and type(built[last]) is type(default)


def test_unix_socket_mode_flag():
    built, err = cli.build_config(cli.parse_args(["--unix", "/tmp/x.sock", "--unix-socket-mode", "0660"]))
    assert err is None and built["unix_socket_mode"] == "0660" and built["unix_socket"] == "/tmp/x.sock"
    assert config.validate(config.merge(config.defaults(), built)) is None


def test_cli_page_lists_every_option(built_docs):
    page = (built_docs / "cli.html").read_text()
    for action in cli.make_parser()._actions:
        for option in action.option_strings:
            assert option in page, option


def included_files():
    """The example files the docs include, relative to docs/examples/."""
    found = set()
    for page in DOCS.glob("*.rst"):
        found |= set(re.findall(r"\.\. literalinclude:: examples/(\S+)", page.read_text()))
    return found


def test_every_example_is_in_the_docs():
    files = {str(p.relative_to(DOCS / "examples")) for p in (DOCS / "examples").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert files - included_files() == set()
    assert included_files() - files == set()


def test_python_in_the_docs_comes_from_the_examples():
    for page in DOCS.glob("*.rst"):
        assert not re.search(r"\.\. code(-block)?:: python|^\.\. code::\s*$", page.read_text(), re.M), page.name


def code_blocks(text, language):
    """The bodies of the ``.. code-block:: language`` blocks of an rst text, dedented."""
    blocks = []
    for match in re.finditer(r"^\.\. code-block:: %s\n\n((?:    .*\n|\n)+)" % language, text, re.M):
        blocks.append("\n".join(line[4:] for line in match.group(1).rstrip("\n").split("\n")) + "\n")
    return blocks


def test_readme_code_is_the_examples():
    examples = [p.read_text() for p in (DOCS / "examples").rglob("*.py")]
    blocks = code_blocks(README.read_text(), "python")
    assert len(blocks) >= 2
    for block in blocks:
        assert any(block in example for example in examples), block


def test_readme_is_a_front_door():
    text = README.read_text()
    lines = text.count("\n")
    assert 200 <= lines <= 300, lines
    first_screen = "\n".join(text.split("\n")[:50])
    for needed in ("make run", "make test", ".venv/bin/lilush-http", "pip install .", "--wsgi flask_app:app",
                   "hello:handle"):
        assert needed in first_screen, needed


def test_readme_renders_as_a_long_description():
    """PyPI renders README.rst with docutils and refuses it on any warning."""
    from docutils.core import publish_doctree
    from docutils.utils import SystemMessage
    try:
        publish_doctree(README.read_text(), settings_overrides={"halt_level": 2, "report_level": 2,
                                                                "warning_stream": False})
    except SystemMessage as exc:
        pytest.fail(str(exc))


CHECK_PAGE = """<!doctype html><html><body><script>
const pages = %s;
function frame(src) {
  return new Promise(resolve => {
    const f = document.createElement("iframe");
    f.onload = () => resolve(f);
    f.src = src;
    document.body.appendChild(f);
  });
}
const pause = ms => new Promise(r => setTimeout(r, ms));
async function main() {
  const report = {pages: {}, search: null};
  for (const page of pages) {
    const f = await frame(page);
    const doc = f.contentDocument;
    const images = [...doc.images];
    for (let i = 0; i < 50 && images.some(img => !img.complete); i++) await pause(100);
    const links = [...new Set([...doc.querySelectorAll("a[href]")].map(a => a.href.split("#")[0])
                                .filter(h => h.startsWith(location.origin)))];
    const badLinks = [];
    for (const link of links) {
      const answer = await fetch(link, {method: "HEAD"});
      if (answer.status !== 200) badLinks.push(link + " " + answer.status);
    }
    report.pages[page] = {title: doc.title, images: images.length, links: links.length, badLinks,
                          badImages: images.filter(img => !(img.complete && img.naturalWidth > 0)).map(i => i.src)};
    f.remove();
  }
  const s = await frame("search.html?q=connection_limit");
  let hits = [];
  for (let i = 0; i < 150 && hits.length === 0; i++) {
    await pause(100);
    hits = [...s.contentDocument.querySelectorAll("#search-results li a")].map(a => a.getAttribute("href"));
  }
  report.search = hits;
  await fetch("/__result", {method: "POST", body: JSON.stringify(report)});
}
main().catch(e => fetch("/__result", {method: "POST", body: JSON.stringify({error: String(e)})}));
</script></body></html>"""

BROWSED = ["index.html", "getting-started.html", "settings.html", "benchmarks.html", "porting.html",
           "architecture.html"]


def test_pages_and_search_in_chromium(built_docs, live_server, tmp_path):
    files = static.make_handle(str(built_docs))
    results = []
    got = threading.Event()

    def handle(method, query, args, headers, body, ctx):
        if query == "/__check.html":
            return CHECK_PAGE % json.dumps(BROWSED), 200, {"content-type": "text/html"}
        if query == "/__result":
            results.append(json.loads(body))
            got.set()
            return "thanks", 200, {}
        return files(method, query, args, headers, body, ctx)
    live = live_server(handle)
    with HeadlessChromium(live.url + "/__check.html", tmp_path):
        got.wait(90)
    assert results, "Chromium reported nothing"
    report = results[0]
    assert "error" not in report, report
    for page in BROWSED:
        seen = report["pages"][page]
        assert seen["title"] and seen["links"] > 5, (page, seen)
        assert seen["badLinks"] == [] and seen["badImages"] == [], (page, seen)
    assert report["pages"]["benchmarks.html"]["images"] >= 2
    assert any(hit.startswith("settings.html") for hit in report["search"]), report["search"]


def test_benchmark_charts_are_drawn_from_the_results(tmp_path):
    pytest.importorskip("matplotlib")
    from xml.etree import ElementTree
    sys.path.insert(0, str(ROOT / "bench"))
    import charts
    scenarios, figures = charts.read_results(str(ROOT / "bench" / "results.md"))
    assert len(scenarios) >= 7 and figures[(scenarios[0], "lilush_http")][0] > 0
    assert charts.main(["--output", str(tmp_path)]) == 0
    for name in ("bench-rps.svg", "bench-cpu.svg"):
        for folder in (tmp_path, DOCS / "images"):  # drawn now, and the ones the docs show
            svg = ElementTree.parse(str(folder / name)).getroot()
            text = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
            for server in {server for _, server in figures}:
                assert server in text, (folder, name, server)
            for scenario in scenarios:
                assert scenario.split()[1] in text, (folder, name, scenario)
