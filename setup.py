"""The conventional `python setup.py ...` entry point; the project's metadata lives in pyproject.toml.

`pip install .` and `make venv` use pyproject.toml directly; this shim only serves tools that look for setup.py.
"""

from setuptools import setup

setup()
