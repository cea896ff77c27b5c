"""The Bazel files keep up with the package: every room has its library, listed in taskology_tf/BUILD, and
every test folder its target (README, section "Bazel")."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def _rooms():
    return sorted(p.parent.name for p in (REPO / "taskology_tf").glob("*/__init__.py"))


def test_every_room_has_a_library_named_after_it_listed_in_the_package_build():
    listed = re.search(r"ROOMS = \[(.*?)\]", (REPO / "taskology_tf" / "BUILD").read_text(), re.S).group(1)
    assert sorted(re.findall(r'"(\w+)"', listed)) == _rooms()
    for room in _rooms():
        build = REPO / "taskology_tf" / room / "BUILD"
        assert build.is_file(), f"{build} is missing: add one like taskology_tf/geometry/BUILD"
        assert f'name = "{room}"' in build.read_text() and 'glob(["**/*.py"])' in build.read_text()


def test_every_test_folder_has_a_pytest_target():
    for folder in sorted(p.parent for p in (REPO / "tests").glob("*/test_*.py")):
        build = folder / "BUILD"
        assert build.is_file() and "pytest_test(" in build.read_text(), f"{build}: add one like tests/geometry/BUILD"


def test_bazel_files_keep_the_workspace_offline_and_the_venv_out():
    workspace = (REPO / "WORKSPACE").read_text()
    for name in ("rules_cc", "rules_java", "remote_coverage_tools"):
        assert f'name = "{name}"' in workspace and (REPO / "third_party" / name / "WORKSPACE").is_file()
    assert ".venv" in (REPO / ".bazelignore").read_text().split()
    assert "try-import %workspace%/.bazelrc.user" in (REPO / ".bazelrc").read_text()
