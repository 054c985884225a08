"""Manual pages come from the same argparse parsers as --help: every option
and its help text must be in them, and man must render them cleanly."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import skbtrace
from skbtrace import manpage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHERS = {"skb_frag_list_watcher": "skb_frag_list_watcher.py",
             "skb_vxlan_source_detector": "skb_vxlan_source_detector.py"}
MACROS = (".TH", ".SH", ".SS", ".PP", ".TP", ".B", ".nf", ".fi", ".RS", ".RE")


def words(text):
    return " ".join(text.split())


def run(args):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("man"))
    assert manpage.main([d]) == 0
    out = {}
    for command, _module in manpage.COMMANDS:
        with open(os.path.join(d, command + ".8")) as f:
            out[command] = (os.path.join(d, command + ".8"), f.read())
    return out


def help_of(command):
    rc, out, err = run([sys.executable, os.path.join(ROOT, LAUNCHERS[command]), "--help"])
    assert rc == 0, err
    return out


def help_options(help_text):
    """Every option --help shows (the option table, not the examples)."""
    table = help_text.split("\nexamples:")[0]
    return set(re.findall(r"(?:^|[\s,\[|])(--?[a-z][a-z0-9-]*)", table))


@pytest.mark.parametrize("command", sorted(LAUNCHERS))
def test_page_has_every_option_and_help_text(pages, command):
    _path, roff = pages[command]
    plain = roff.replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace("\\fR", "")
    h = help_of(command)
    opts = help_options(h)
    assert {"--help", "--version", "--json", "-o", "--output", "--flight-recorder"} <= opts
    for opt in opts:
        assert re.search(r"(^|[\s,\[|])%s\b" % re.escape(opt), plain), opt
    module = dict(manpage.COMMANDS)[command]
    import importlib
    parser = importlib.import_module(module).make_parser(command)
    fmt = parser._get_formatter()
    for a in parser._actions:
        if a.help and a.help != "==SUPPRESS==":
            assert words(fmt._expand_help(a)) in words(plain), a.option_strings
    for section in ("examples:", "signals:"):
        block = h.split("\n" + section + "\n")[1].split("\n\n")[0]
        assert words(block) in words(plain), section
    assert "\n.SH SIGNALS\n" in roff and "\n.SH EXAMPLES\n" in roff
    assert "--ebpf" not in plain                 # hidden in --help, hidden here


@pytest.mark.parametrize("command", sorted(LAUNCHERS))
def test_roff_is_sane(pages, command):
    _path, roff = pages[command]
    assert roff.startswith('.TH %s 8 "" "skbtrace %s"' % (command.upper().replace("_", "\\_"),
                                                          skbtrace.__version__))
    for line in roff.splitlines():
        if line.startswith((".", "'")):
            assert line.split()[0] in MACROS, line
        else:
            assert not re.search(r"(?<!\\)-", line), line    # hyphens stay copyable options
            assert not re.search(r"\\(?![-e&fR]|f[BIR])", line), line


@pytest.mark.skipif(not shutil.which("man"), reason="man-db not installed (make deps)")
@pytest.mark.parametrize("command", sorted(LAUNCHERS))
def test_man_renders_without_warnings(pages, command):
    path, _roff = pages[command]
    env = dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8")
    p = subprocess.Popen(["man", "--warnings", "-l", path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    out, err = p.communicate(timeout=60)
    out = re.sub(r".\x08", "", out.decode())
    assert p.returncode == 0 and err.decode() == "", err
    for head in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "SIGNALS", "SEE ALSO"):
        assert re.search(r"^%s$" % head, out, re.M), head
    flat = words(out)
    assert "%s - " % command in flat and "--flight-recorder [all]" in flat
    assert "-o FILE, --output FILE" in flat


@pytest.mark.parametrize("command", sorted(LAUNCHERS))
def test_version(command):
    rc, out, err = run([sys.executable, os.path.join(ROOT, LAUNCHERS[command]), "--version"])
    assert rc == 0 and err == ""
    assert out == "%s (skbtrace) %s\n" % (LAUNCHERS[command], skbtrace.__version__)


def test_generator_usage_error(capsys):
    assert manpage.main([]) == 2
    assert capsys.readouterr().err == "usage: python3 -m skbtrace.manpage DIR\n"
