"""Main file of the `bazel run` targets //taskology_tf:taskology, :train, :eval, ...: the `taskology` command.

The subcommand targets pass their subcommand as the first argument (``args`` in taskology_tf/BUILD). It lives
here, not in taskology_tf/, because Python puts the main file's folder first on ``sys.path``.
"""

import sys

from taskology_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
