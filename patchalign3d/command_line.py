"""What every subcommand shares: the exit-status convention, one-line error messages that name the flag to
change (never a Python function), and part names read from the command line.

Exit status of every ``patchalign3d`` subcommand: 0 done; 1 the command could not do its work (a file missing
or unreadable, a file that is not a checkpoint, weights not available offline, an output folder not
writable, a shape of a batch failed); 2 the command line is wrong (an unknown, missing, conflicting or
malformed argument, an output name of the wrong kind). ``PATCHALIGN3D_DEBUG=1`` shows the traceback instead
of the message.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from patchalign3d.errors import UsageError, WeightsUnavailableError

EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The convention in words, for every subcommand's ``--help``.
EXIT_STATUS_HELP = ("exit status: 0 done; 1 failed (a one-line message says why and what to change); 2 usage error "
                    "(an unknown, missing, conflicting or malformed argument)")
#: Errors that mean "the input or the environment is wrong", as opposed to a bug (which keeps its traceback).
USER_ERRORS = (OSError, ValueError, KeyError)
#: The library's advice in Python terms, and the same advice on the command line.
PYTHON_TO_FLAGS = (
    ("Build a bank that contains them with TextBank.build(names, encoder).",
     "Use names the bank holds, or --text-encoder instead of --text-bank (the names are then encoded)."),
    ("pass trust_pickle=True (--trust-pickle on the command line)", "pass --trust-pickle"),
)
CHECKPOINT_HINT = "Pass --checkpoint PATH (a released .pt, a Lightning .ckpt or a save_pretrained folder)."
TEXT_HINT = "Pass --text-encoder minilm (works offline) or --text-bank FILE (a saved TextBank)."


def run_command(prog: str, fn: Callable[[], int]) -> int:
    """``fn()``'s exit status; a user error becomes one line on stderr and status 2 (usage) or 1 (failure)."""
    try:
        return fn()
    except USER_ERRORS as err:
        if os.environ.get("PATCHALIGN3D_DEBUG"):
            raise
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_FAILURE


def error_message(err: BaseException) -> str:
    """``err`` as one line for the command line: weights that are not available name the flag that gives
    local ones (``--checkpoint``, ``--text-encoder``/``--text-bank``) instead of a Python argument."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    for python, flags in PYTHON_TO_FLAGS:
        text = text.replace(python, flags)
    if isinstance(err, WeightsUnavailableError):
        origin = _raised_in(err.__traceback__)
        if origin.startswith("patchalign3d.model"):
            text = _drop_python_advice(text) + " " + CHECKPOINT_HINT
        elif origin.startswith("patchalign3d.text"):
            text = _drop_python_advice(text) + " " + TEXT_HINT
    return text


def _raised_in(tb: TracebackType | None) -> str:
    """The module of the innermost ``patchalign3d`` frame that raised (the loader the error came from)."""
    module = ""
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name.startswith("patchalign3d.") and name != __name__:
            module = name
        tb = tb.tb_next
    return module


def _drop_python_advice(text: str) -> str:
    # The library's own advice names Python arguments (load_model(), pretrained=...); the command line has flags.
    for marker in (" or pass a local path to load_model()", " or pass a local folder", "; or pass pretrained=",
                   " or pass pretrained="):
        cut = text.find(marker)
        if cut >= 0:
            rest = text[cut + len(marker):]
            details = rest.find("Details:")
            text = text[:cut].rstrip(" ,;") + "." + (f" {rest[details:]}" if details >= 0 else "")
    return text.strip()


def parse_names(text: str, flag: str) -> list[str]:
    """Comma-separated names of a flag's value; a name in double quotes may hold commas.

    ``'seat,"back, upper",leg'`` -> ``["seat", "back, upper", "leg"]``. Empty, blank or duplicate names
    are a :class:`UsageError` naming ``flag``.
    """
    from patchalign3d.text import validate_part_names

    try:
        rows = list(csv.reader([text], skipinitialspace=True, strict=True))
    except csv.Error as err:
        raise UsageError(f"{flag} {text!r}: {err}; quote a name holding commas as \"back, upper\"") from None
    names = [n.strip() for n in (rows[0] if rows else [])]
    try:
        return validate_part_names(names)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def read_names_file(path: str | os.PathLike, flag: str) -> list[str]:
    """One name per line of a text file (blank lines and lines starting with ``#`` skipped)."""
    from patchalign3d.text import validate_part_names

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a text file with one name per line")
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path} is not a UTF-8 text file; give one name per line") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        return validate_part_names(names)
    except ValueError as err:
        raise ValueError(f"{flag} {path}: {err}") from None
