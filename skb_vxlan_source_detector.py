#!/usr/bin/env python3
"""Launcher: runs from a clone (`sudo python3 skb_vxlan_source_detector.py`) or
as the installed console script. The code lives in skbtrace/detector.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from skbtrace.detector import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
