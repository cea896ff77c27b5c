"""Files on any TensorFlow filesystem: local paths, and URLs such as ``gs://``, ``s3://``, ``hdfs://``, ``ram://``.

Everything goes through ``tf.io.gfile``, so checkpoints and exports can live on an object store that a
cluster's pods and ``tensorflow_model_server`` share. What differs between the two kinds of path is
what a reader may see while a writer works:

* a local path (POSIX): renaming a file or a folder is atomic, so a file or a whole folder is written
  under a temporary name and renamed into place;
* a URL: there are no real folders and a rename is a copy and a delete, so nothing is atomic but the
  write of one object (GCS and S3 show an object only once its upload is complete). A folder is
  therefore *published* by copying it file by file with a completion file last (``publish_tree``); a
  reader treats the folder as present only once that file exists.

TensorFlow's in-memory ``ram://`` filesystem behaves like an object store here (its folder rename moves
the folder entry but not the files in it), which is how the tests exercise the URL path in-process.
"""

from __future__ import annotations

import os
import posixpath
from typing import Callable, Iterable

import tensorflow as tf


def is_url(path: str) -> bool:
    """True for a filesystem URL (``gs://b/x``, ``ram://x``); False for a local path."""
    return "://" in os.fspath(path)


def join(base: str, *parts: str) -> str:
    """``base/part/...``; URLs always with ``/``."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def absolute(path: str) -> str:
    """A local path made absolute; a URL unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return tf.io.gfile.exists(os.fspath(path))


def isdir(path: str) -> bool:
    return tf.io.gfile.isdir(os.fspath(path))


def listdir(path: str) -> list[str]:
    """Names in folder ``path`` (no trailing ``/``; object stores list sub-folders with one); [] if absent."""
    try:
        return sorted({name.rstrip("/") for name in tf.io.gfile.listdir(os.fspath(path))})
    except tf.errors.NotFoundError:
        return []


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(os.fspath(path))


def remove(path: str) -> None:
    """Delete file ``path``; nothing if it is absent."""
    try:
        tf.io.gfile.remove(os.fspath(path))
    except tf.errors.NotFoundError:
        pass


def rmtree(path: str) -> None:
    """Delete folder ``path`` and everything under it; nothing if it is absent."""
    try:
        tf.io.gfile.rmtree(os.fspath(path))
    except tf.errors.NotFoundError:
        pass


def rename(source: str, target: str) -> None:
    """Move a *file* (on object stores: copy and delete); overwrites ``target``."""
    tf.io.gfile.rename(os.fspath(source), os.fspath(target), overwrite=True)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never half of it.

    Local: a temporary file, fsync, rename. URL: a temporary object, then a rename, which object stores do as
    one server-side copy: the target object is replaced whole (writing it in place is not safe everywhere:
    ``ram://`` does not truncate a file opened for writing).
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    if is_url(path):
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        rename(tmp, path)
        return
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tree(folder: str) -> tuple[list[str], list[str]]:
    """(sub-folders, files) under ``folder``, relative to it (``/``-separated), each sorted."""
    folder = os.fspath(folder)
    folders, files = [], []
    for root, dirs, names in tf.io.gfile.walk(folder):
        rel = root[len(folder):].strip("/").replace(os.sep, "/")
        folders += [posixpath.join(rel, d.rstrip("/")) if rel else d.rstrip("/") for d in dirs]
        files += [posixpath.join(rel, n) if rel else n for n in names]
    # ram:// lists by name prefix: "assets.extra/x" also shows up as a phantom "assets/.extra". Keep what exists.
    files = [f for f in files if tf.io.gfile.exists(join(folder, *f.split("/")))]
    return sorted(folders), sorted(files)


def publish_tree(source: str, target: str, last: Iterable[str] = (), atomic_rename: bool | None = None,
                 on_copy: Callable[[str], None] | None = None) -> None:
    """Move the finished folder ``source`` to ``target`` (which must not exist) so no reader sees it half-written.

    atomic_rename: None = rename the folder in one step on a local path, copy on a URL; False forces the
      copy (e.g. a local mount of an object store, whose rename is not atomic either).
    last: names (relative to ``source``) copied after every other file, in this order; a reader that waits
      for the last of them never sees the folder incomplete. ``source`` is deleted afterwards.
    on_copy: called with each relative path once it is copied (tests use it to look in between).
    """
    source, target = os.fspath(source), os.fspath(target)
    if atomic_rename is None:
        atomic_rename = not is_url(target)
    if atomic_rename:
        os.replace(source, target)
        return
    last = list(last)
    folders, files = tree(source)
    makedirs(target)
    for rel in folders:  # explicit folders, empty ones too: some filesystems (ram://) list only those
        makedirs(join(target, *rel.split("/")))
    for rel in [f for f in files if f not in last] + [f for f in last if f in files]:
        tf.io.gfile.copy(join(source, *rel.split("/")), join(target, *rel.split("/")), overwrite=True)
        if on_copy is not None:
            on_copy(rel)
    rmtree(source)
