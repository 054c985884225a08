# Kept for RHEL 8's pip 9, which cannot build from setup.cfg alone; setup.cfg
# holds the metadata. The manual pages are built here, from the commands'
# argparse parsers (skbtrace/manpage.py), and installed as data files:
# setuptools 39 (RHEL 8) has no [options.data_files] in setup.cfg.
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
MAN_DIR = os.path.join("build", "man")


def man_pages():
    sys.path.insert(0, HERE)
    try:
        from skbtrace import manpage
    finally:
        sys.path.pop(0)
    return manpage


class BuildWithManPages(build_py):
    def run(self):
        man_pages().write(os.path.join(HERE, MAN_DIR))
        build_py.run(self)


setup(
    cmdclass={"build_py": BuildWithManPages},
    data_files=[("share/man/man8", [os.path.join(MAN_DIR, "%s.8" % c)
                                    for c, _m in man_pages().COMMANDS])],
)
