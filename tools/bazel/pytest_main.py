"""Main file of the `bazel test` targets under //tests: pytest on the test files given as arguments.

Bazel runs a test in its runfiles tree, read-only, without HOME; HOME, TMPDIR and the Keras and matplotlib
folders go under TEST_TMPDIR, pytest keeps no cache, and its JUnit report goes where Bazel collects it.
"""

import os
import sys


def _private_folders(environ) -> None:
    tmp = environ.get("TEST_TMPDIR")
    if not tmp:
        return
    for name, folder in (("HOME", "home"), ("TMPDIR", "tmp"), ("KERAS_HOME", "keras"), ("MPLCONFIGDIR", "mpl")):
        if not environ.get(name):
            environ[name] = os.path.join(tmp, folder)
            os.makedirs(environ[name], exist_ok=True)


def main(argv) -> int:
    _private_folders(os.environ)
    from taskology_tf import runtime

    problem = runtime.missing_dependencies()
    if problem:
        print(f"bazel test: {problem}", file=sys.stderr)
        return 2
    try:
        import pytest
    except ImportError:
        print(f"bazel test: pytest is not installed in {sys.executable}: run `make venv` first.", file=sys.stderr)
        return 2
    flags = ["-p", "no:cacheprovider"]
    if os.environ.get("XML_OUTPUT_FILE"):
        flags.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    return pytest.main([*flags, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
