# Kept for RHEL 8's pip 9, which cannot build from setup.cfg alone.
from setuptools import setup

setup()
