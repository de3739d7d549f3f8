"""Where ecomtrain keeps files, and writes that never leave a partial file behind.

Every file or folder ecomtrain creates for others to read (cached models and corpora, scans,
scores, responses) is written under a temporary name in the same folder and renamed into
place, so a crash or a concurrent writer can never expose half of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def is_uri(path: str) -> bool:
    """A cloud location (s3://, gs://, ...) rather than a local path."""
    return "://" in str(path)


def located(path: str) -> str:
    """A local path made absolute (Ray Tune's storage refuses a relative one), a URI as is."""
    return path if is_uri(path) else str(Path(path).resolve())


def read_text(path: str | Path) -> str:
    """A text file's contents, from a local path or a cloud URI."""
    if not is_uri(str(path)):
        return Path(path).read_text(encoding="utf-8")
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(str(path))
    with fs.open_input_stream(inner) as f:
        return f.read().decode("utf-8")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file to a local path (atomically) or a cloud URI (one upload: readers
    see the old object or the new one, never a part)."""
    if not is_uri(str(path)):
        atomic_write(path, text)
        return
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(str(path))
    with fs.open_output_stream(inner) as f:
        f.write(text.encode("utf-8"))


def download_files(uri: str, folder: Path) -> Path:
    """The files directly in the cloud folder `uri` (not its sub-folders), copied into
    `folder`; returns `folder`."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri.rstrip("/"))
    folder.mkdir(parents=True, exist_ok=True)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=False)):
        if info.type == pyarrow.fs.FileType.File:
            pyarrow.fs.copy_files(
                info.path,
                str(folder / info.base_name),
                source_filesystem=fs,
                destination_filesystem=pyarrow.fs.LocalFileSystem(),
            )
    return folder


def cache_dir() -> Path:
    """Where ecomtrain caches what it builds (tiny models, built-in corpora, scans)."""
    return Path(os.environ.get("ECOMTRAIN_CACHE", Path.home() / ".cache" / "ecomtrain"))


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator:
    """A text file (UTF-8) that appears at `path` only once the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def atomic_dir(target: str | Path, build: Callable[[Path], None]) -> Path:
    """The folder `target`, built by `build(tmp)` in a temporary folder beside it and renamed
    into place. When another process finished first, its (identical) folder is kept."""
    target = Path(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
    try:
        build(tmp)
        tmp.rename(target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class OutputError(ValueError):
    """An output path that cannot take what a command would write; names the flag and path."""


def check_output(
    path: str | Path,
    flag: str,
    inputs: dict[str, str | Path | None] | None = None,
    folder: bool = False,
) -> None:
    """Stop before any work when `path` (given as `flag`) cannot take a command's output: it
    is one of the command's `inputs` ({flag: path}: writing would destroy it), a folder where
    a file goes or a file where a folder goes (`folder`), a device, pipe or other special
    file (an atomic write would replace it), under a file, or where nothing can be written
    (a read-only or special filesystem such as /proc). Cloud URIs are not checked."""
    if is_uri(str(path)):
        return
    p = Path(path)
    for other, source in (inputs or {}).items():
        if source and not is_uri(str(source)) and _same_file(p, Path(source)):
            raise OutputError(f"{flag} {path}: is {other} too; writing it would destroy it")
    if p.exists():
        if folder and not p.is_dir():
            raise OutputError(f"{flag} {path}: is a file, not a folder")
        if not folder and p.is_dir():
            raise OutputError(f"{flag} {path}: is a folder; name the file to write")
        if not folder and not p.is_file():
            raise OutputError(f"{flag} {path}: is not a regular file (a device, pipe or socket)")
    base = p if folder and p.is_dir() else p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{flag} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".ecomtrain-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write in {base} ({e.strerror or e})") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
