"""Pages generated from the code, so the docs cannot drift from it:

``_generated/settings.rst`` the settings reference, from ``config.DEFAULTS``, the message
``config.validate`` gives for a wrong value, ``config.MEANINGS`` and the CLI's flags;
``_generated/cli.rst`` the command-line reference, from the argparse parser.
Both are written when the build starts, and included by settings.rst and cli.rst.
"""

import json
import os


from lilush_http import cli, config

# Flags whose dest is not the config key they set.
FLAG_KEYS = {"unix": "unix_socket", "tls_cert": "ssl", "tls_key": "ssl"}


class _Wrong:
    """A value no validation accepts, so ``validate`` says what it expects."""

    def __repr__(self):
        return "<wrong>"


def accepts(key):
    """What ``config.validate`` accepts for the dotted ``key``: the 'expected ...' of its
    message for a wrong value, or None when it does not check the key."""
    cfg = config.defaults()
    *path, last = key.split(".")
    table = cfg
    for part in path:
        table = table[part]
    table[last] = _Wrong()
    try:
        err = config.validate(cfg)
    except Exception:  # a validator that trips on the odd value still checks the key
        return None
    if not err or not err.startswith(key + ":"):
        return None
    text = err[len(key) + 1:].strip()
    return text.rsplit(", got", 1)[0]


def flags():
    """``{config key: [flag, ...]}`` of the parser's options that set a config key."""
    keys = dict(config.flat())
    found = {}
    for action in cli.make_parser()._actions:
        key = FLAG_KEYS.get(action.dest, action.dest)
        if action.option_strings and key in keys:
            found.setdefault(key, []).extend(a for a in action.option_strings if a.startswith("--"))
    return found


def anchor(key):
    """The label of a key's entry on the settings page: ``setting-compression-level``."""
    return "setting-" + key.replace(".", "-").replace("_", "-")


def no_flag_reason(key, default):
    if isinstance(default, list):
        return "no flag: a list; ``--set '%s=[...]'`` (JSON) or ``--config``" % key
    return "no flag: a table; ``--set %s.KEY=VALUE`` or ``--config``" % key


def settings_rst():
    """The settings reference as reStructuredText lines."""
    found = flags()
    lines = ["At a glance", "-" * 11, "", ".. list-table::", "   :header-rows: 1", "   :widths: 35 30 35", "",
             "   * - key", "     - default", "     - flag"]
    for key, default in config.flat():
        lines += ["   * - :ref:`%s <%s>`" % (key, anchor(key)), "     - ``%s``" % json.dumps(default),
                  "     - %s" % (", ".join("``%s``" % f for f in found[key]) if key in found else "--set, --config")]
    lines.append("")
    group = None
    for key, default in config.flat():
        table = key.split(".")[0] if "." in key else ""
        if table != group:
            group = table
            heading = "The ``%s`` table" % table if table else "Top-level keys"
            lines += [heading, "-" * len(heading), ""]
        lines += [".. _%s:" % anchor(key), "",
                  "``%s``" % key, "~" * (len(key) + 4), ""]
        lines += [config.MEANINGS[key], ""] if key in config.MEANINGS else ["*(no meaning written)*", ""]
        lines += [":Default: ``%s``" % json.dumps(default),
                  ":Accepts: %s" % (accepts(key) or "*(not validated)*")]
        if key in found:
            lines.append(":Flag: %s" % ", ".join("``%s``" % f for f in found[key]))
        else:
            lines.append(":Flag: %s" % no_flag_reason(key, default))
        lines.append("")
    return lines


def cli_rst():
    """The command-line reference as reStructuredText lines, one entry per option."""
    parser = cli.make_parser()
    keys = dict(config.flat())
    lines = ["::", "", "    " + parser.format_usage().strip(), ""]
    for action in parser._actions:
        if action.option_strings:
            name = ", ".join(action.option_strings)
        else:
            name = action.metavar or action.dest
        if action.metavar and action.option_strings:
            name += " " + action.metavar
        elif action.option_strings and action.nargs != 0 and action.choices:
            name += " {%s}" % ",".join(action.choices)
        elif action.option_strings and action.nargs != 0:
            name += " " + action.dest.upper()
        help_text = (action.help or "").replace("%(prog)s", parser.prog).replace("%%", "%")
        key = FLAG_KEYS.get(action.dest, action.dest)
        lines += ["``%s``" % name, "    %s" % (help_text.replace("*", "\\*") or "(see the settings reference)")]
        if key in keys:
            lines[-1] += " Sets :ref:`%s <%s>`." % (key, anchor(key))
        lines.append("")
    return lines


def write_generated(app):
    """Write the generated pages' bodies under docs/_generated/, where settings.rst and
    cli.rst include them (rewritten only when changed, so Sphinx rebuilds only then)."""
    folder = os.path.join(app.srcdir, "_generated")
    os.makedirs(folder, exist_ok=True)
    for name, make in (("settings.rst", settings_rst), ("cli.rst", cli_rst)):
        text = "\n".join(make()) + "\n"
        path = os.path.join(folder, name)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


def setup(app):
    app.connect("builder-inited", write_generated)
    return {"parallel_read_safe": True, "version": "1"}
