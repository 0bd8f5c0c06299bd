"""Writing a command's results without touching anything the command did not make.

Every command that writes (``sw.quantize --out``, ``sw.evaluate --json/--plot``, ``sim.bench
--out``, ``hw.build --out``, ``sim.regress --json``) goes through this module:

- before any work, :func:`prepare_dir` / :func:`prepare_file` check that the path can be
  written (no regular file in the way, a folder that can be created) and that what is there
  is empty or was written by the same command earlier (a stamp file in a folder, a marker
  string in a file); anything else is refused with one line naming it, unless ``force``;
- :func:`replace_dir` builds a folder's new contents beside it and swaps them in only when
  the command succeeded, keeping the folder's permissions; :func:`write_file` and
  :func:`write_json` replace a file atomically, keeping its permissions.
"""

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import UserError

__all__ = ["STAMP", "marker", "prepare_dir", "prepare_file", "replace_dir", "write_file",
           "write_json"]

#: The file that marks a folder as a command's output (its text is :func:`marker`).
STAMP = ".nnfpga-output"
#: How much of an existing file is searched for the marker.
_MARKER_SEARCH_BYTES = 1 << 16


def marker(command):
    """The string that identifies an output of ``command`` (e.g. ``"nnfpga hw.build"``)."""
    return f"nnfpga {command}"


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _check_writable(path, option):
    """Fail unless ``path``'s nearest existing ancestor is a folder we can create things in."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {option} {str(path)!r}: {str(ancestor)!r} is a file, "
                        f"not a folder")
    try:  # access() says yes to root on read-only or pseudo file systems: really try
        Path(tempfile.mkdtemp(prefix=".nnfpga-probe-", dir=ancestor)).rmdir()
    except OSError as error:
        raise UserError(f"cannot write {option} {str(path)!r}: {str(ancestor)!r} is not "
                        f"writable ({error.strerror or error})") from None


def _file_is_ours(path, command):
    with open(path, "rb") as file:
        head = file.read(_MARKER_SEARCH_BYTES)
    return not head or marker(command).encode() in head


def _dir_is_ours(path, command, legacy):
    stamp = path / STAMP
    if stamp.is_file():
        return stamp.read_text(errors="replace").strip() == marker(command)
    names = {child.name for child in path.iterdir()}
    return not names or (bool(legacy) and set(legacy) <= names)


def prepare_dir(path, command, *, force=False, legacy=(), option="--out"):
    """Check, before any work, that folder ``path`` may receive ``command``'s output.

    Parameters
    ----------
    path : str or Path
    command : str
        The command's module name, e.g. ``"hw.build"``.
    force : bool
        Replace a folder that holds other files (the user asked for it).
    legacy : tuple of str
        File names that, all present, mark an output written before stamps existed.
    option : str
        The option that named the path, for messages.

    Returns
    -------
    Path

    Raises
    ------
    UserError
        The path is a file, cannot be created, or holds files ``command`` did not write.
    """
    path = Path(path)
    _check_writable(path, option)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a file, not a folder")
    if path.is_dir() and not force and not _dir_is_ours(path, command, legacy):
        raise UserError(f"{option} {str(path)!r} exists and holds files {command} did not "
                        f"write; choose another folder or pass --force to replace it")
    return path


def prepare_file(path, command, *, force=False, option="--json"):
    """Check, before any work, that file ``path`` may be (re)written by ``command``.

    An existing file may be replaced when it is empty or carries :func:`marker` (it was
    written by ``command``), or with ``force``.

    Returns
    -------
    Path
    """
    path = Path(path)
    _check_writable(path, option)
    if path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a folder, not a file")
    if path.exists() and not force and not _file_is_ours(path, command):
        raise UserError(f"{option} {str(path)!r} exists and was not written by {command}; "
                        f"choose another file or pass --force to replace it")
    return path


def _swap_in(scratch, path):
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_dir() else _default_mode()
    os.chmod(scratch, mode)
    if not path.exists():
        scratch.rename(path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    old.rmdir()
    path.rename(old)
    try:
        scratch.rename(path)
    except OSError:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replace_dir(path, command):
    """Yield a scratch folder beside ``path`` that replaces it when the block succeeds.

    Check the path with :func:`prepare_dir` first. A failed block leaves ``path`` as it was;
    a successful one leaves exactly the scratch folder's contents (plus the stamp) there, with
    the permissions the old folder had (or the umask's for a new one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        yield scratch
        (scratch / STAMP).write_text(marker(command) + "\n")
        _swap_in(scratch, path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def write_file(path, content):
    """Replace ``path`` with ``content`` (str or bytes) atomically, keeping its permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _default_mode() & 0o666
    data = content.encode() if isinstance(content, str) else bytes(content)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path, document, command):
    """Write ``document`` (a dict) as JSON headed by ``"generator": marker(command)``."""
    write_file(path, json.dumps({"generator": marker(command), **document}, indent=1) + "\n")
