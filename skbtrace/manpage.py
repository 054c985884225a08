"""Section-8 manual pages rendered from each command's argparse parser, the
text --help prints: the description, every option with its help, and the
epilog's sections (examples:, signals:). One source, so the two cannot drift.

    python3 -m skbtrace.manpage DIR     # writes DIR/<command>.8 for every command

setup.py runs it at build time and installs the pages into share/man/man8.
"""
import argparse
import importlib
import os
import re
import sys

from skbtrace import __version__

# command (console script) -> module with make_parser(prog) and DESCRIPTION
COMMANDS = [
    ("skb_frag_list_watcher", "skbtrace.watcher"),
    ("skb_vxlan_source_detector", "skbtrace.detector"),
    ("skb_postmortem", "skbtrace.postmortem.cli"),
]

SEE_ALSO_DOCS = "docs/skb_frag_list_watcher.md, docs/skb_vxlan_source_detector.md, " \
                "docs/skb_postmortem.md, docs/deploy.md and docs/crash-reproduction.md in the " \
                "skbtrace sources"

_SECTION_RE = re.compile(r"^([a-z][a-z ]*):$")


def esc(text):
    """Plain text -> roff: backslashes and hyphens escaped (an option stays
    copyable), a line starting with a control character made literal."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + l if l.startswith((".", "'")) else l for l in text.split("\n"))


def _paragraphs(text):
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _epilog_sections(epilog):
    """'examples:\\n    lines...' blocks -> [(TITLE, [lines])]."""
    out = []
    for block in _paragraphs(epilog or ""):
        lines = block.split("\n")
        m = _SECTION_RE.match(lines[0])
        if m:
            out.append((m.group(1).upper(), lines[1:]))
        elif out:
            out[-1][1].extend([""] + lines)
    return out


def _option_head(action):
    if not action.option_strings:       # a positional argument: its metavar
        name = "\\fI%s\\fR" % esc(action.metavar or action.dest.upper())
        return name + (" ..." if action.nargs in ("+", "*") else "")
    names = []
    for opt in action.option_strings:
        txt = "\\fB%s\\fR" % esc(opt)
        if action.nargs == 0:
            pass
        elif action.nargs == "?":
            txt += " [\\fI%s\\fR]" % esc(action.metavar or action.dest.upper())
        else:
            txt += " \\fI%s\\fR" % esc(action.metavar or action.dest.upper())
        names.append(txt)
    return ", ".join(names)


def render(command, parser):
    fmt = parser._get_formatter()
    desc = parser.description or ""
    # NAME is one line: the description's first sentence, up to a colon
    summary = re.split(r"\.\s|\.$|:\s", desc.replace("\n", " ").strip())[0]
    usage = parser.format_usage().strip()
    usage = re.sub(r"^usage: ", "", usage)
    usage = re.sub(r"\s*\n\s*", " ", usage)
    out = ['.TH %s 8 "" "skbtrace %s" "System Administration"' % (
        command.upper().replace("_", "\\_"), __version__),
        ".SH NAME", "%s \\- %s" % (esc(command), esc(summary[0].lower() + summary[1:])),
        ".SH SYNOPSIS", ".B %s" % esc(usage.split(" ", 1)[0]),
        esc(usage.split(" ", 1)[1] if " " in usage else ""),
        ".SH DESCRIPTION"]
    for para in _paragraphs(desc):
        out += [".PP", esc(para)]
    out.append(".SH OPTIONS")
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        out.append(".SS %s" % esc(group.title[0].upper() + group.title[1:]))
        for a in actions:
            out += [".TP", _option_head(a), esc(fmt._expand_help(a) if a.help else "")]
    for title, lines in _epilog_sections(parser.epilog):
        out += [".SH %s" % esc(title), ".nf", ".RS 4"]
        out += [esc(l[4:] if l.startswith("    ") else l) for l in lines]
        out += [".RE", ".fi"]
    others = ["\\fB%s\\fR(8)" % esc(c) for c, _m in COMMANDS if c != command]
    out += [".SH SEE ALSO", ", ".join(others + ["\\fBlogrotate\\fR(8)", "\\fBsystemd.kill\\fR(5)"]),
            ".PP", esc(SEE_ALSO_DOCS) + "."]
    return "\n".join(out) + "\n"


def pages():
    """[(file name, roff text)] for every command."""
    out = []
    for command, module in COMMANDS:
        parser = importlib.import_module(module).make_parser(command)
        out.append(("%s.8" % command, render(command, parser)))
    return out


def write(directory):
    if not os.path.isdir(directory):
        os.makedirs(directory)
    written = []
    for name, text in pages():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
    return written


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m skbtrace.manpage DIR\n")
        return 2
    for path in write(argv[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
