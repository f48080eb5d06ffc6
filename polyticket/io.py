"""The one way polyticket writes a file that another process may read: atomically.

Every result, mask, table and config is written to a unique temporary name in the target's
own folder, then renamed over the target. A reader (another shard, a report, a resumed
run) sees the old file or the new one, never half of one, and two writers finishing at once
cannot trample each other's temporary file. Files get the permissions the user's umask
gives (``mkstemp`` alone would make them 0600, unreadable to colleagues sharing a study).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import tempfile
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from polyticket.errors import UserError


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    ends without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh sibling folder to fill; it becomes ``path`` (which must not exist, or be
    empty) only if the block succeeds, and is removed otherwise."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path} already exists; remove it or choose another directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            if path.is_dir():
                path.rmdir()  # empty (checked above); a rename cannot replace a folder everywhere
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # another process filled ``path`` while this one filled ``tmp``
            raise UserError(f"{path} already exists; another process made it meanwhile") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Rows of dicts; the columns are every key in order of first appearance."""
    rows = list(rows)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def copy_file(source: str | Path, target: str | Path) -> Path:
    import shutil

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows as written by ``write_csv`` (values stay strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; a ``UserError`` naming the file, the line and the byte offset when
    it cannot be read or decoded (``open(..., encoding="utf-8")`` would raise a traceback
    at whichever line the decoder happened to reach)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.end]!r})"
        ) from None


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last silently, so a study file with two ``settings:`` blocks would run with
    half of what its author wrote."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' keys may be overridden: that is what they are for
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML itself refuses it, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, duplicate keys refused (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 (a SafeLoader)


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, lines split as ``open`` splits them."""
    return numbered_lines(read_text(path))


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line), split at the newlines ``open`` splits at (``str.splitlines``
    also splits at form feeds and other separators, and would misnumber the lines)."""
    import io

    return enumerate(io.StringIO(text, newline=None), 1)


def prepare_output_dir(path: str | Path, create: bool = True) -> Path:
    """Make sure files can be written in an output folder, before any work: an existing
    file, a path under a file, or a folder that cannot be written fails now with its reason,
    not after an hour of training. With ``create=False`` the folder is left to the first file
    written into it (a command refused later leaves no empty folder behind), and the nearest
    folder above it that exists is the one tried."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} is an existing file, not a directory")
    dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise UserError(f"output {path}: {dangling} is a link to nothing")
    nearest = path if create else next(p for p in (path, *path.parents) if p.exists())
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not nearest.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as exc:
        raise UserError(f"cannot write in output directory {path}: {exc.strerror or exc}") from None
    return path


def prepare_output_file(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """As ``prepare_output_dir`` for one output file: its folder must be writable, the file
    itself no folder and none of the command's ``inputs`` (writing it would destroy one)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a directory, not a file")
    for given in map(Path, inputs):
        if given.exists() and path.exists() and path.samefile(given):
            raise UserError(f"output {path} is an input of the command too: write elsewhere")
    prepare_output_dir(path.parent, create=False)
    return path


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Which file, its size and SHA-256: enough to tell that an input changed."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    size = Path(path).stat().st_size
    return {"file": os.path.abspath(path), "size": size, "sha256": digest.hexdigest()}


def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
