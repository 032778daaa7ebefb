"""An on-disk cache shared by runs: content-addressed entries, written atomically, read only whole.

Evaluation inputs that many runs recompute identically (frozen image features, decoded test images;
``trainers/common/eval_inputs.py``) are stored here once, under the digest of everything they depend
on (their key). Layout of the cache folder::

    <dir>/<kind>/<key>.entry    one entry: a header, then the payload
    <dir>/locks/<key>.lock      held (``lockf``) while a process computes that entry

An entry file starts with ``MAGIC``, the length of a JSON header and the header itself (the key, the
key's fields, the payload's layout, size and SHA-256), padded to ``HEADER_BYTES``; the payload follows.

Safety under concurrent runs (the run-integrity rules):

- An entry is written to ``<path>.tmp-<pid>`` and renamed into place once complete and on disk
  (``harness.fileio.atomic_write``), so no reader ever opens a partial entry under its final name;
  a killed writer leaves only its temporary file, removed later by ``evict`` / ``clean``.
- Readers check the magic, the key and the file size against the header (and, for small entries and
  ``verify``, the payload's digest); anything else is treated as missing and recomputed.
- A process computing an entry holds its lock file, so a second run that needs the same entry waits
  and then reads it instead of computing it again; the kernel releases the lock if the holder dies.
  Without the lock (e.g. a filesystem without ``lockf``) two writers still cannot corrupt an entry:
  each renames a complete file, and the later rename wins.
- Eviction deletes whole files; a process still reading an evicted entry keeps its open file.

Size cap: after each write the least recently used entries (reads refresh an entry's mtime) are
deleted until the folder holds at most the cap. Command line (standard library only, fast)::

    python -m harness.disk_cache info   [--dir DIR]
    python -m harness.disk_cache clean  [--dir DIR] [--kind features|images] [--max-gb GB]
    python -m harness.disk_cache verify [--dir DIR]

The folder is ``EVAL_CACHE.DIR`` when a run sets it, else ``$CLIP_EVAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/clip-fewshot/eval`` (``~/.cache/clip-fewshot/eval``).
"""
import argparse
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import os.path as osp
import struct
import sys
import time

from .fileio import TEMP_SUFFIX, atomic_write

__all__ = [
    "ENV_VAR", "DEFAULT_MAX_GB", "HEADER_BYTES", "CacheEntry", "DiskCache", "default_directory", "key_digest",
    "read_header", "main",
]

ENV_VAR = "CLIP_EVAL_CACHE_DIR"
DEFAULT_MAX_GB = 64.0
MAGIC = b"EVCACHE\x01"
HEADER_BYTES = 65536  # the payload starts here (page-aligned, so it can be memory-mapped)
SUFFIX = ".entry"
LOCKS = "locks"
STALE_TEMP_SECONDS = 24 * 3600  # a temporary file of a live PID this old is abandoned too
CHUNK_BYTES = 1 << 24


def default_directory():
    """``$CLIP_EVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/clip-fewshot/eval`` (default ``~/.cache``)."""
    configured = os.environ.get(ENV_VAR, "")
    if configured:
        return osp.abspath(osp.expanduser(configured))
    base = os.environ.get("XDG_CACHE_HOME", "") or osp.join(osp.expanduser("~"), ".cache")
    return osp.join(base, "clip-fewshot", "eval")


def key_digest(fields):
    """The entry name for a key: SHA-256 (40 hex digits) of its fields as canonical JSON."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class CacheEntry:
    """A complete entry on disk: ``path``, its header ``meta`` and where its payload starts."""

    offset = HEADER_BYTES

    def __init__(self, path, meta):
        self.path = path
        self.meta = meta

    @property
    def layout(self):
        return self.meta["layout"]

    def read_payload(self):
        """The whole payload (a bytearray), checked against the header's SHA-256 (``ValueError`` if damaged)."""
        data = bytearray(self.meta["payload_bytes"])
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            size = f.readinto(data)
        if size != len(data) or hashlib.sha256(data).hexdigest() != self.meta["payload_sha256"]:
            raise ValueError(f'damaged cache entry "{self.path}" (payload digest mismatch)')
        return data


def read_header(path, key=None):
    """The header of the entry file ``path``; ``ValueError`` if it is not a complete entry (of ``key``)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        size = os.fstat(f.fileno()).st_size
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        raise ValueError(f'"{path}" is not a cache entry (bad magic or short header)')
    (length,) = struct.unpack("<Q", head[8:16])
    try:
        meta = json.loads(head[16:16 + length].decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f'"{path}": unreadable cache entry header') from None
    if key is not None and meta.get("key") != key:
        raise ValueError(f'"{path}" holds entry {meta.get("key")}, not {key}')
    if size != HEADER_BYTES + meta.get("payload_bytes", -1):
        raise ValueError(f'"{path}" is {size} bytes, its header says {HEADER_BYTES + meta.get("payload_bytes", 0)}')
    return meta


def _header_bytes(meta):
    text = json.dumps(meta, sort_keys=True).encode()
    if 16 + len(text) > HEADER_BYTES:
        raise ValueError(f"cache entry header too long ({len(text)} bytes)")
    return MAGIC + struct.pack("<Q", len(text)) + text + b"\0" * (HEADER_BYTES - 16 - len(text))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale_temp(path, now):
    """A temporary file whose writer is gone: its PID is not running, or it has not changed for a day."""
    try:
        pid = int(path.rsplit("-", 1)[1])
        age = now - os.stat(path).st_mtime
    except (ValueError, OSError):
        return False
    return not _pid_alive(pid) or age > STALE_TEMP_SECONDS


class DiskCache:
    """Entries of kind ``kind`` (a subfolder) under ``directory``, at most ``max_bytes`` in all."""

    def __init__(self, directory=None, max_bytes=int(DEFAULT_MAX_GB * 1e9)):
        self.directory = osp.abspath(osp.expanduser(directory)) if directory else default_directory()
        self.max_bytes = max_bytes

    def path(self, kind, key):
        return osp.join(self.directory, kind, key + SUFFIX)

    @contextlib.contextmanager
    def lock(self, key, what="an entry"):
        """Hold ``locks/<key>.lock`` while computing ``key``; waits (with a note) for another holder."""
        try:
            folder = osp.join(self.directory, LOCKS)
            os.makedirs(folder, exist_ok=True)
            f = open(osp.join(folder, key + ".lock"), "a+")
        except OSError as error:  # e.g. a read-only folder: nothing will be written there either
            print(f"Note: cannot lock eval cache entry {key[:12]} ({error}); continuing without the lock")
            yield
            return
        with f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                print(f"Waiting for another run that is computing {what} (eval cache {key[:12]}) ...")
                fcntl.lockf(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN)

    def get(self, kind, key):
        """The complete entry ``key`` or None; a damaged file is removed (and reported as missing)."""
        path = self.path(kind, key)
        try:
            meta = read_header(path, key)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            print(f"Note: ignoring a damaged eval cache entry ({error}); it is recomputed")
            self.remove(path)
            return None
        try:
            os.utime(path)  # the entry was used: it is evicted last
        except OSError:
            pass
        return CacheEntry(path, meta)

    def put(self, kind, key, fields, layout, chunks):
        """Write entry ``key`` from ``chunks`` (bytes-like objects) atomically; returns the ``CacheEntry``.

        Then evicts the least recently used entries beyond the size cap (never this one).
        """
        path = self.path(kind, key)
        os.makedirs(osp.dirname(path), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with atomic_write(path, "wb") as f:
            f.write(b"\0" * HEADER_BYTES)
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                f.write(view)
                digest.update(view)
                size += len(view)
            meta = {"key": key, "kind": kind, "fields": fields, "layout": layout, "payload_bytes": size,
                    "payload_sha256": digest.hexdigest(),
                    "created": datetime.datetime.now().isoformat(timespec="seconds")}
            f.seek(0)
            f.write(_header_bytes(meta))
        self.evict(keep=(path,))
        return CacheEntry(path, meta)

    def remove(self, path):
        try:
            os.remove(path)
            return True
        except FileNotFoundError:
            return False

    def entry_files(self, kinds=None):
        """``[(path, size, mtime)]`` of the complete-looking entry files, least recently used first."""
        found = []
        if not osp.isdir(self.directory):
            return found
        for kind in sorted(os.listdir(self.directory)):
            folder = osp.join(self.directory, kind)
            if kind == LOCKS or not osp.isdir(folder) or (kinds and kind not in kinds):
                continue
            for name in os.listdir(folder):
                if name.endswith(SUFFIX):
                    try:
                        st = os.stat(osp.join(folder, name))
                    except FileNotFoundError:  # evicted meanwhile by another run
                        continue
                    found.append((osp.join(folder, name), st.st_size, st.st_mtime))
        return sorted(found, key=lambda entry: entry[2])

    def remove_stale_temp_files(self):
        """Delete temporary files left by killed writers; returns their paths."""
        removed, now = [], time.time()
        if not osp.isdir(self.directory):
            return removed
        for folder, _, files in os.walk(self.directory):
            for name in files:
                path = osp.join(folder, name)
                if TEMP_SUFFIX.search(name) and _is_stale_temp(path, now) and self.remove(path):
                    removed.append(path)
        return removed

    def evict(self, keep=(), max_bytes=None, kinds=None):
        """Delete least recently used entries until they total at most ``max_bytes``; returns their paths."""
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        self.remove_stale_temp_files()
        entries = self.entry_files(kinds)
        total = sum(size for _, size, _ in entries)
        removed = []
        for path, size, _ in entries:
            if total <= max_bytes:
                break
            if path in keep:
                continue
            if self.remove(path):
                removed.append(path)
            total -= size
        if removed:
            print(f"Eval cache: removed {len(removed)} least recently used entr{'y' if len(removed) == 1 else 'ies'} "
                  f"to stay under {max_bytes / 1e9:.1f} GB ({self.directory})")
        return removed


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _describe(meta):
    fields = meta.get("fields", {})
    what = f"{fields.get('dataset', '?')}/{fields.get('split', '?')}"
    extra = fields.get("backbone") or ""
    return what, extra


def _info(cache, _args):
    entries = cache.entry_files()
    total = sum(size for _, size, _ in entries)
    print(f"Eval cache: {cache.directory}")
    print(f"{len(entries)} entries, {total / 1e9:.2f} GB")
    for path, size, mtime in reversed(entries):  # most recently used first
        kind = osp.basename(osp.dirname(path))
        try:
            meta = read_header(path)
        except (OSError, ValueError) as error:
            print(f"  {kind:<9} DAMAGED {osp.basename(path)}: {error}")
            continue
        what, extra = _describe(meta)
        used = datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")
        rows = meta.get("layout", {}).get("rows", "?")
        print(f"  {kind:<9} {what:<40} {rows:>7} rows {size / 1e6:>10.1f} MB  used {used}  {extra}  "
              f"{meta['key'][:12]}")
    return 0


def _clean(cache, args):
    kinds = [args.kind] if args.kind else None
    max_bytes = 0 if args.max_gb is None else int(args.max_gb * 1e9)
    removed = cache.evict(max_bytes=max_bytes, kinds=kinds)
    if args.max_gb is None and not kinds:
        locks = osp.join(cache.directory, LOCKS)
        for name in os.listdir(locks) if osp.isdir(locks) else []:
            cache.remove(osp.join(locks, name))
    print(f"Removed {len(removed)} entries from {cache.directory}")
    return 0


def _verify(cache, _args):
    bad = 0
    for path, _, _ in cache.entry_files():
        try:
            meta = read_header(path)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                f.seek(HEADER_BYTES)
                for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                    digest.update(block)
            if digest.hexdigest() != meta["payload_sha256"]:
                raise ValueError("payload digest mismatch")
        except (OSError, ValueError, KeyError) as error:
            bad += 1
            print(f"removing damaged entry {path}: {error}")
            cache.remove(path)
    print(f"Checked {len(cache.entry_files())} good entries in {cache.directory}; removed {bad} damaged")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m harness.disk_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("info", "clean", "verify"))
    parser.add_argument("--dir", default="", help=f"cache folder (default: ${ENV_VAR} or ~/.cache/clip-fewshot/eval)")
    parser.add_argument("--kind", choices=("features", "images"), help="clean: only entries of this kind")
    parser.add_argument("--max-gb", type=float, help="clean: evict least recently used entries down to this size "
                                                     "(default: remove all)")
    args = parser.parse_args(argv)
    if args.max_gb is not None and args.max_gb < 0:
        print(f"error: --max-gb must be >= 0, got {args.max_gb}", file=sys.stderr)
        return 2
    cache = DiskCache(args.dir or None)
    return {"info": _info, "clean": _clean, "verify": _verify}[args.command](cache, args)


if __name__ == "__main__":
    sys.exit(main())
