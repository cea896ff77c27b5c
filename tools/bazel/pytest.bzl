"""`pytest_test`: one `py_test` that runs pytest on a folder's test files."""

def pytest_test(name, srcs = None, data = [], deps = [], **kwargs):
    """A py_test running pytest on `srcs` (default: this package's test_*.py, subfolders included).

    The conftest.py files of the package and of //tests come along, and so does pyproject.toml (pytest's
    settings). Other attributes (size, tags, timeout, ...) go to py_test.
    """
    if srcs == None:
        srcs = native.glob(["**/test_*.py"])
    package = native.package_name()
    conftests = native.glob(["**/conftest.py"])
    if package != "tests":
        conftests = conftests + ["//tests:conftest.py"]
    native.py_test(
        name = name,
        main = "//tools/bazel:pytest_main.py",
        srcs = ["//tools/bazel:pytest_main.py"] + srcs,
        args = ["%s/%s" % (package, src) for src in srcs],
        data = ["//:pyproject.toml"] + conftests + data,
        deps = ["//taskology_tf"] + deps,
        **kwargs
    )
