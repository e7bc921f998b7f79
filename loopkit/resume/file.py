"""Checkpoint files: written atomically, verified by a checksum, loaded as data only.

A file is a fixed-size text header followed by a ``torch.save`` payload::

    loopkit-checkpoint\\n
    format=loopkit-checkpoint-2\\n
    sha256=<64 hex digits of the payload>\\n
    size=<payload length in bytes, 20 digits>\\n
    <payload>

Guarantees:

- **Atomic.** The payload is streamed into a temporary file in the target's directory (named
  ``.<target>.loopkit-tmp-<host>-<pid>-<random>``, so a writer recognises its own and knows whether it is still
  alive), flushed, fsynced, renamed over the target with ``os.replace`` and the directory is fsynced. A crash at
  any moment leaves the previous file or the new one, never a torn file.
- **Verified.** Loading checks the header, the length and the SHA-256 of the payload before unpickling
  anything: a truncated or bit-flipped file is a :class:`CheckpointError` naming the file.
- **Data only.** The payload is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists,
  tuples and dicts. A file that pickles a callable or any other object is refused without running it; saving
  refuses such an object up front (naming where it sits in the state), so nothing is written that could not be
  read back.
- Files get the mode the process's umask gives any new file (usually 0644), not ``mkstemp``'s 0600.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> save_atomic({"answer": 42}, path)
    >>> load_checkpoint(path)["answer"]
    42
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import secrets
import socket
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, cast

import torch

FORMAT = "loopkit-checkpoint-2"
_MAGIC = b"loopkit-checkpoint\n"
_HEADER_LEN = len(_MAGIC) + len(b"format=" + FORMAT.encode() + b"\n") + len(b"sha256=\n") + 64 + len(b"size=\n") + 20
_TMP_MARK = ".loopkit-tmp-"
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.loopkit-tmp-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]+$")
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"

# What a checkpoint may hold: the types torch's weights_only unpickler rebuilds without running code. Exact
# types: numpy's float64 is a float subclass, but it pickles as a numpy object that such a load refuses.
_LEAF_TYPES = frozenset({str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size})


class CheckpointError(ValueError):
    """A file is not a loopkit checkpoint, is damaged, or does not fit the learner it is loaded into.

    The message names the file (when there is one) and says what is wrong with it. Nothing has been changed
    when it is raised.
    """


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` (a checkpoint state) to ``path`` so that ``path`` is never left half-written.

    Raises:
        TypeError: ``obj`` holds something other than data (a callable, a numpy array, a custom object); the
            message names its place in the state. Nothing is written.
        OSError: the file could not be written (a full disk, no permission); the message names the file and
            the cause, and ``path`` is unchanged.
    """
    check_data_only(obj)
    path = os.fspath(path)
    writer = None

    def write(f: IO[bytes]) -> None:
        nonlocal writer
        f.write(b"\0" * _HEADER_LEN)  # placeholder; the checksum is known once the payload is written
        writer = _HashingWriter(f)
        torch.save(obj, cast(IO[bytes], writer))  # torch only calls write() on it
        f.seek(0)
        f.write(_header(writer.sha256.hexdigest(), writer.size))

    try:
        replace_atomically(path, write)
    except BaseException as error:
        # torch's zip writer turns a failed write into "[enforce fail at inline_container.cc] unexpected pos";
        # the writer kept the OSError underneath (the disk full, say), which is what the user needs to read.
        cause = writer.error if writer is not None and writer.error is not None else error
        if isinstance(cause, OSError) or _is_torch_write_error(cause):
            raise _write_error(cause, path) from error
        raise


def replace_atomically(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Replace the file at ``path`` whole with what ``write`` writes, so that a crash at any moment leaves the
    old file or the new one: a temporary file beside it (:func:`temp_path_for`), flushed and fsynced, renamed over
    ``path``, then the directory fsynced so that the rename survives a power cut too.

    The file gets the mode the umask gives any new file. On an exception (from ``write`` or the disk) the
    temporary file is removed, ``path`` is unchanged and the exception propagates.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = temp_path_for(path)
    try:
        os.makedirs(directory, exist_ok=True)
        # O_EXCL: a name this process just made up; 0o666 so the umask decides the mode, as for any file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # never created, or the directory refuses even that
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_atomic`, on the CPU.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is not a loopkit checkpoint (empty, text, another program's file, a bare
            ``torch.save`` file, a ``loopkit-checkpoint-1`` file), is truncated or corrupted (its checksum does
            not match), or holds something other than data. The message names the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(
            f"no checkpoint at {path!r}: it is a directory; pass the path of a checkpoint file in it, e.g. the "
            f"newest, Checkpoint.latest({path!r})"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; pass the path of a file written by Checkpoint")
    with open(path, "rb") as f:
        header = f.read(_HEADER_LEN)
        digest, size = _parse_header(header, path)
        sha = hashlib.sha256()
        read = 0
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            read += len(chunk)
        if read != size:
            raise CheckpointError(
                f"{path!r} is truncated or has trailing data: its header promises {size} bytes of content, the "
                f"file holds {read}; it cannot be used (resume from an earlier checkpoint)"
            )
        if sha.hexdigest() != digest:
            raise CheckpointError(
                f"{path!r} is corrupted: the SHA-256 of its content does not match the one recorded when it was "
                "written (a flipped bit on disk or in transfer); resume from an earlier checkpoint, e.g. "
                "Checkpoint.latest(dirpath, skip_damaged=True)"
            )
        try:
            state = torch.load(cast(IO[bytes], _Window(f, _HEADER_LEN)), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{path!r} holds objects other than data (tensors, numbers, strings, lists, dicts), so loading it "
                f"could run code; it is refused. Only files written by loopkit's Checkpoint load. ({error})"
            ) from None
        except Exception as error:  # a verified payload that torch cannot read: written by something else
            raise CheckpointError(f"{path!r} has a valid header but its content cannot be read: {error}") from None
    return state


def check_data_only(obj: Any, where: str = "state") -> None:
    """Raise ``TypeError`` naming the first thing in ``obj`` that a ``weights_only`` load would refuse."""
    for place, value in _walk(obj, where):
        if type(value) not in _LEAF_TYPES and not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{place} is a {type(value).__module__}.{type(value).__qualname__} ({value!r:.80}); a checkpoint "
                "holds only tensors, numbers, strings, None and lists/tuples/dicts of them, so that loading it "
                "never runs code. Convert it in the state_dict that returns it (e.g. a tensor or a list)"
            )


def _walk(obj: Any, where: str) -> Iterator[tuple[str, Any]]:
    stack = [(where, obj)]
    while stack:
        place, value = stack.pop()
        kind = type(value)
        if kind is dict or kind is OrderedDict:
            for k, v in value.items():
                if type(k) not in _LEAF_TYPES or isinstance(k, torch.Tensor):
                    yield f"{place} key {k!r}", k
                stack.append((f"{place}/{k}", v))
        elif kind is list or kind is tuple:
            # Long lists of plain numbers (histories) are the common case: skip them in one pass.
            if not all(type(v) in (float, int) for v in value):
                stack.extend((f"{place}[{i}]", v) for i, v in enumerate(value))
        else:
            yield place, value


# ----------------------------------------------------------------------------------------------- temp files
def temp_path_for(path: str) -> str:
    """A fresh temporary name beside ``path`` that says who writes it: host, process id and a random tag."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}{_TMP_MARK}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def stale_temp_files(directory: str) -> list[str]:
    """Temporary files in ``directory`` left by loopkit writers on this host that are no longer running.

    A file whose writer runs on another host, or is still alive (another rank, another process, this one), is
    never listed: it may still be written. (A process id reused since is treated as alive: the file stays.)
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    stale = []
    for name in names:
        m = _TMP_RE.match(name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            stale.append(os.path.join(directory, name))
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


# ----------------------------------------------------------------------------------------------- internals
def _header(digest: str, size: int) -> bytes:
    return _MAGIC + f"format={FORMAT}\nsha256={digest}\nsize={size:020d}\n".encode()


def _parse_header(header: bytes, path: str) -> tuple[str, int]:
    if not header:
        raise CheckpointError(
            f"{path!r} is empty: it is not a loopkit checkpoint (a save was cut off before it began?)"
        )
    if not header.startswith(_MAGIC):
        raise CheckpointError(f"{path!r} is not a loopkit checkpoint: {_what_is(header, path)}")
    lines = header[len(_MAGIC) :].split(b"\n")
    if len(header) < _HEADER_LEN or len(lines) < 3:
        raise CheckpointError(f"{path!r} is a truncated loopkit checkpoint (its header is incomplete)")
    fmt = lines[0].decode("ascii", "replace").removeprefix("format=")
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path!r} is in format {fmt!r}; this loopkit reads {FORMAT!r} (the header may also be damaged)"
        )
    digest = lines[1].decode("ascii", "replace").removeprefix("sha256=")
    size_text = lines[2].decode("ascii", "replace").removeprefix("size=")
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or not size_text.isdigit():
        raise CheckpointError(f"{path!r} is corrupted: its header is damaged")
    return digest, int(size_text)


def _what_is(header: bytes, path: str) -> str:
    if header.startswith(b"PK\x03\x04"):
        kind = "a zip archive"
        try:
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("data.pkl") for n in z.namelist()):
                    kind = "a plain torch.save file"
                    if any(n.endswith((".format_version", "/version")) for n in z.namelist()):
                        kind += (
                            " (a tensor or state saved with torch.save, or a loopkit-checkpoint-1 file from an "
                            "older loopkit, which this version does not read: it was loaded with full "
                            "unpickling and had no checksum; finish that run with the loopkit that wrote it)"
                        )
        except (zipfile.BadZipFile, OSError):
            kind = "a damaged zip archive"
        return f"it is {kind}; a checkpoint starts with a loopkit header (write one with Checkpoint)"
    if header[:2] == b"\x80\x02" or header[:1] == b"\x80":
        return "it is a legacy pickle file; write checkpoints with Checkpoint"
    try:
        text = header.decode("utf-8")
        return f"it is a text file (starting {text[:30]!r}); write checkpoints with Checkpoint"
    except UnicodeDecodeError:
        return "its first bytes are not a loopkit header; write checkpoints with Checkpoint"


class _HashingWriter:
    """A write-only file that hashes and counts what passes through (torch.save streams into it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        try:
            return self.f.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.f.flush()


class _Window(io.RawIOBase):
    """The file from ``offset`` on, as a seekable file (torch.load's zip reader seeks within the payload)."""

    def __init__(self, f: BinaryIO, offset: int) -> None:
        self.f, self.offset = f, offset
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.f.readinto(buffer)  # type: ignore[attr-defined]

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            pos += self.offset
        return self.f.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.f.tell() - self.offset


def _is_torch_write_error(error: BaseException) -> bool:
    # torch's zip writer reports a failed write as RuntimeError "[enforce fail at inline_container.cc...]".
    return isinstance(error, RuntimeError) and "inline_container" in str(error)


def _write_error(error: BaseException, path: str) -> OSError:
    code = getattr(error, "errno", None)
    cause = getattr(error, "strerror", None) or str(error)
    hint = ""
    if code == errno.ENOSPC:
        hint = "; free space on that disk (keep_last=k needs room for k + 1 checkpoints while one is written)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; make the directory writable or choose another"
    message = f"could not write checkpoint {path!r}: {cause}{hint}; the previous file is unchanged"
    return OSError(code, message) if code is not None else OSError(message)


def _fsync_directory(directory: str) -> None:
    # Windows cannot open a directory; there the rename is durable once os.replace returns.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
