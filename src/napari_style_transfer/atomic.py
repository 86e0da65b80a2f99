"""Files written whole or not at all: every file this package writes (results, batch.json,
downloaded weights, their features-only copies) goes through :func:`replacing`. No numpy,
torch, napari or Qt.

A file is written beside its destination under a name that says who writes it (host and
process), then renamed over the destination: a full disk, a crash or Ctrl-C leaves the file
that was there intact, never a truncated one, and a killed writer's leftover can be told from
a live writer's (see ``weights.remove_stale_partials``).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: Ends the names of the partial files being written.
PARTIAL_SUFFIX = ".napari-style-transfer.partial"


def _writer_host() -> str:
    """Names the process-id space of this process: the host, and on Linux its pid namespace
    (containers that share a hostname and a cache do not share process ids)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    try:
        return f"{host}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


WRITER_HOST = _writer_host()
#: .<target name>.<host>.<pid>.<random>.napari-style-transfer.partial
PARTIAL_NAME = re.compile(
    r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+" + re.escape(PARTIAL_SUFFIX) + "$"
)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content in; on leaving the block without an
    error it is flushed to disk and renamed to ``path`` (keeping the permissions of the file
    it replaces, else those the umask gives), else removed. The folder must exist."""
    descriptor, partial = _create_partial(path)
    try:
        with os.fdopen(descriptor, "w+b") as file:  # w+: a multi-page TIFF reads back what it wrote
            yield file
            file.flush()
            os.fsync(file.fileno())
        _keep_mode(path, partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_replacing(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into :func:`replacing` ``(path)``."""
    with replacing(path) as file:
        write(file)


def _create_partial(destination: Path) -> tuple[int, Path]:
    """A new empty file beside ``destination``, opened for writing, named for its writer."""
    while True:
        name = f".{destination.name[:100]}.{WRITER_HOST}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        partial = destination.with_name(name)
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(partial, flags, 0o666), partial  # less the umask, as open() gives
        except FileExistsError:
            continue


def _keep_mode(path: Path, partial: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:  # a new file: the umask decided its mode when it was created
        return
    os.chmod(partial, mode)
