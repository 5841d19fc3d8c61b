from setuptools import setup

# All metadata lives in setup.cfg; this file exists for `pip install -e .` on old tooling.
setup()
