"""Figure files of the command line: the checks before a figure is computed, and the write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def figure_formats() -> dict[str, str]:
    """The file extensions matplotlib writes, with their descriptions (``png``, ``pdf``, ``svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


def check_figure_path(option: str, path: Path | None) -> None:
    """Refuse, before any work, a figure path with no file name, whose folder does not exist, or
    without an extension matplotlib writes (it names the format; matplotlib would append ``.png``
    to a name without one, writing another file than the one asked for)."""
    if path is None:
        return
    path = Path(path)
    if not path.name or path.is_dir():
        raise InputError(f"{option} {str(path)!r}: give a file name, e.g. figure.png")
    if not path.parent.is_dir():
        raise InputError(f"{option} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    ext = path.suffix.lstrip(".").lower()
    if ext not in figure_formats():
        what = f"matplotlib cannot write {ext!r} figures" if ext else "no extension to name the format"
        raise InputError(f"{option} {str(path)!r}: {what}; use one of "
                         f"{', '.join(sorted(figure_formats()))}")


def save_figure(fig: Any, path: Path, option: str, **savefig: Any) -> None:
    """``fig.savefig(path, **savefig)``, a failure to write given as one :class:`~mfdyn.InputError` line."""
    check_figure_path(option, path)
    try:
        fig.savefig(path, **savefig)
    except OSError as exc:
        raise InputError(f"{option} {str(path)!r} cannot be written ({exc.strerror or exc})") from None
