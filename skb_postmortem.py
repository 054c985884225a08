#!/usr/bin/env python3
"""Launcher: runs from a clone (`python3 skb_postmortem.py FILE...`) or as the
installed console script. The code lives in skbtrace/postmortem/cli.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from skbtrace.postmortem.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
