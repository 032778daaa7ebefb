"""Atomic writes: a file is either its old version or its complete new version, never a mix.

A write goes to ``<path>.tmp-<pid>`` and is renamed over ``<path>`` only once it is complete and
on disk. A failed write (a full disk, an exception in the writer) removes its temporary file and
leaves the previous file intact; a killed process leaves its temporary file behind, which the
next run in that folder removes (``remove_temp_files``) once it holds the folder's lock.
"""
import errno
import os
import os.path as osp
import re

__all__ = ["atomic_write", "remove_temp_files", "WriteError", "TEMP_SUFFIX"]

TEMP_SUFFIX = re.compile(r"\.tmp-\d+$")


class WriteError(OSError):
    """A file could not be written; the previous version (if any) is intact and no partial file is left."""


class atomic_write:
    """``with atomic_write(path, "wb") as f: ...`` writes ``path`` atomically (see the module docstring)."""

    def __init__(self, path, mode="wb"):
        self.path = path
        self.mode = mode
        self.tmp = f"{path}.tmp-{os.getpid()}"

    def __enter__(self):
        self.file = open(self.tmp, self.mode)
        return self.file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # the writer failed: keep the old file, leave nothing behind
            self._discard()
            if issubclass(exc_type, OSError) and not isinstance(exc, WriteError):
                raise self._write_error(exc) from None
            return False
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as error:  # e.g. the disk filled up while the buffer was flushed
            self._discard()
            raise self._write_error(error) from None
        return False

    def _discard(self):
        """Close (ignoring a second failure) and remove the temporary file."""
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass

    def _write_error(self, error):
        reason = os.strerror(error.errno) if error.errno else str(error)
        hint = " (free some space, then rerun: the run resumes)" if error.errno == errno.ENOSPC else ""
        return WriteError(error.errno, f'cannot write "{self.path}": {reason}; the previous version is '
                                       f"intact and no partial file was left{hint}")


def remove_temp_files(directory, max_depth=3):
    """Delete ``*.tmp-<pid>`` files left under ``directory`` by interrupted writes; returns their paths.

    Call it only while holding the folder's lock: then no other process is writing there.
    """
    removed = []
    if not osp.isdir(directory):
        return removed
    base_depth = directory.rstrip(os.sep).count(os.sep)
    for folder, subfolders, files in os.walk(directory):
        if folder.count(os.sep) - base_depth >= max_depth:
            subfolders[:] = []
        for name in files:
            if TEMP_SUFFIX.search(name):
                path = osp.join(folder, name)
                os.remove(path)
                removed.append(path)
    return removed
