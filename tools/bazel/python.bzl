"""The Python that Bazel runs the project with: the virtual environment `make venv` builds.

`venv_python` writes a repository holding a `py_runtime` whose interpreter is
`<workspace>/.venv/bin/python3` (or `$TASKOLOGY_PYTHON`), and the toolchain that selects it, so
`py_binary` and `py_test` run with the project's dependencies (TensorFlow, gin-config, pytest).
"""

PYTHON_ENV = "TASKOLOGY_PYTHON"

_BUILD = """\
# Written by //tools/bazel:python.bzl (venv_python); interpreter: {interpreter}
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
    stub_shebang = "#!/usr/bin/env python3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(rctx):
    workspace = rctx.path(Label("//:WORKSPACE")).dirname
    override = rctx.os.environ.get(PYTHON_ENV, "")
    interpreter = override or "%s/.venv/bin/python3" % workspace
    if override and not override.startswith("/"):
        found = rctx.which(override)  # a name on PATH, e.g. python3.11
        interpreter = str(found) if found else override
    if not rctx.path(interpreter).exists:
        if override:
            fail("%s=%s: no such file (give an absolute path or a name on PATH). Point it at a Python with the project installed " % (PYTHON_ENV, override) +
                 "(`pip install -e '.[test]'`), or unset it to use .venv.")
        fail("no virtual environment at %s/.venv: run `make venv` first " % workspace +
             "(or set %s to a Python with the project installed)." % PYTHON_ENV)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", _BUILD.format(interpreter = interpreter))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = [PYTHON_ENV],
    local = True,
    doc = "A py_runtime and toolchain for the workspace's .venv (or $%s)." % PYTHON_ENV,
)
