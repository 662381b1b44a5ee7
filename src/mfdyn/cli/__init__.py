"""The ``mfdyn`` command line.

Each module in this package defines ``register(app: typer.Typer)``; modules are discovered
automatically. Bad input (``mfdyn.InputError`` or a usage error) prints one line ``error: ...`` on
stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from ..errors import InputError

app = typer.Typer(
    name="mfdyn",
    help="Training dynamics of matrix factorization: GD, gradient flow, sweeps and paper reproductions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_REGISTERED = False


@app.callback()
def _root() -> None:
    """Training dynamics of matrix factorization: GD, gradient flow, sweeps and paper reproductions."""


def build_app() -> typer.Typer:
    global _REGISTERED
    if not _REGISTERED:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            if hasattr(module, "register"):
                module.register(app)
        _REGISTERED = True
    return app


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit 2 (for checks done inside commands)."""
    raise InputError(message)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    from .._cache import enable_persistent_cache

    enable_persistent_cache()
    build_app()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="mfdyn")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit(2, argv)
    except click_exceptions.ClickException as exc:
        print(f"error: {exc.format_message()}{_given(exc, sys.argv[1:] if argv is None else argv)}", file=sys.stderr)
        return _exit(2, argv)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return _exit(130, argv)
    except Exception as exc:  # (a request too large for this machine's memory is bad input too)
        if not isinstance(exc, MemoryError) and "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        detail = " ".join(str(exc).split())[:160]
        print(f"error: not enough memory for this request (ask for fewer points, steps or a smaller problem): "
              f"{detail}", file=sys.stderr)
        return _exit(2, argv)
    code = result if isinstance(result, int) else 0
    return _exit(code, argv)


def _given(exc: Exception, args: list[str]) -> str:
    """`` (got 'abc')``: the value the command line gave the option a parse error is about, when
    the parser's own message does not name it; else ``""``."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or []
    if not isinstance(exc, click_exceptions.BadParameter) or not any(o.startswith("-") for o in opts):
        return ""
    value = None
    for i, arg in enumerate(args):
        name, eq, inline = arg.partition("=")
        if name in opts:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
    return "" if value is None or repr(value) in exc.format_message() else f" (got {value!r})"


def _exit(code: int, argv) -> int:
    if argv is None:  # called as the console script
        sys.exit(code)
    return code
