"""Stand-in for rules_cc's defs.bzl: Bazel's native C++ rules (nothing downloaded)."""

def cc_binary(**attrs):
    """Bazel's native cc_binary."""
    native.cc_binary(**attrs)


def cc_import(**attrs):
    """Bazel's native cc_import."""
    native.cc_import(**attrs)


def cc_library(**attrs):
    """Bazel's native cc_library."""
    native.cc_library(**attrs)


def cc_proto_library(**attrs):
    """Bazel's native cc_proto_library."""
    native.cc_proto_library(**attrs)


def cc_shared_library(**attrs):
    """Bazel's native cc_shared_library."""
    native.cc_shared_library(**attrs)


def cc_test(**attrs):
    """Bazel's native cc_test."""
    native.cc_test(**attrs)


def cc_toolchain(**attrs):
    """Bazel's native cc_toolchain."""
    native.cc_toolchain(**attrs)


def cc_toolchain_suite(**attrs):
    """Bazel's native cc_toolchain_suite."""
    native.cc_toolchain_suite(**attrs)


def fdo_prefetch_hints(**attrs):
    """Bazel's native fdo_prefetch_hints."""
    native.fdo_prefetch_hints(**attrs)


def fdo_profile(**attrs):
    """Bazel's native fdo_profile."""
    native.fdo_profile(**attrs)


def objc_import(**attrs):
    """Bazel's native objc_import."""
    native.objc_import(**attrs)


def objc_library(**attrs):
    """Bazel's native objc_library."""
    native.objc_library(**attrs)
