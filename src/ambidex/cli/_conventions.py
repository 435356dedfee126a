"""What every ``ambidex`` command shares: ``-h``, metavars, literal help, one-line errors.

Every Typer app of the command line is an :class:`AmbidexTyper`. Its groups
and commands are :class:`Group` and :class:`Command`, which

* accept ``-h`` as well as ``--help``;
* show conventional metavars in their help: a flag as a bare flag, a value by
  its kind (``INTEGER``, ``FLOAT``, ``TEXT``, ``PATH``, ``[a|b|c]`` for a
  choice), an argument by its name in capitals (``MODEL``), rather than
  typer's ``<bool>``, ``<int range>`` and ``{model}``. This reaches into how
  typer 0.29 shows a parameter (:data:`METAVAR_HOOKS` says whether the
  installed typer has those hooks); on a typer without them the help shows
  typer's own metavars, and nothing else changes;
* print their help text as written: typer reads help as rich markup, so
  ``pip install 'ambidex[sim]'`` would lose its ``[sim]``;
* check the ``AMBIDEX_*`` environment variables before they run
  (:func:`ambidex.cli._environment.check_environment`).

The root group, :class:`RootGroup`, turns click's usage errors (a bad option
value, an unknown command) into the one ``error:`` line every other failure
prints, and any exception that escapes a command into one line and exit 1
(with the traceback at ``--log-level debug``).
"""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar, get_args

import typer
import typer.core
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ambidex.cli._errors import fail, print_error

__all__ = ["CONTEXT_SETTINGS", "METAVAR_HOOKS", "AmbidexTyper", "Command", "Group", "RootGroup"]

log = logging.getLogger(__name__)

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

F = TypeVar("F", bound=Callable[..., Any])

_TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


def metavar_hooks() -> bool:
    """True when the installed typer shows parameters the way the metavars below hook into.

    typer 0.29 builds each parameter with a ``type_descriptor`` and asks
    ``display_type_rich`` (options and arguments) and ``_usage_display_name``
    (arguments) what to show; other versions may not, and a subclass
    overriding methods that are never called would silently do nothing, or
    one called with other arguments would fail while printing help.
    """
    needed = (
        (TyperOption, "display_type_rich"),
        (TyperArgument, "display_type_rich"),
        (TyperArgument, "_usage_display_name"),
        (TyperArgument, "display_name_raw"),
    )
    if not all(hasattr(cls, name) for cls, name in needed):
        return False
    for cls in (TyperOption, TyperArgument):
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            return False
        if "type_descriptor" not in params:
            return False
    return True


METAVAR_HOOKS = metavar_hooks()
"""Whether this typer has the hooks for conventional metavars (else typer's own are shown)."""
if not METAVAR_HOOKS:
    log.debug(
        "typer %s has not the hooks ambidex's metavars use: its own metavars are shown",
        getattr(typer, "__version__", "?"),
    )


def _type_name(param: Any) -> str | None:
    """The conventional metavar of ``param``'s value, or None to keep typer's."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    try:
        choices = desc.choices
        if choices is not None:
            shown = [str(c.value) if isinstance(c, Enum) else str(c) for c in choices]
            return "[" + "|".join(shown) + "]"
        if desc.is_path:
            return "PATH"
        annotation = desc.annotation
        if desc.is_list:
            (annotation,) = get_args(annotation)
    except (AttributeError, TypeError, ValueError):  # another typer's descriptor
        return None
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


class _Option(TyperOption):
    """A typer option with a conventional metavar (none at all for a flag)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return _type_name(self) or super().display_type_rich(ctx)


class _Argument(TyperArgument):
    """A typer argument shown as ``NAME`` in usage lines and help, with its value's kind."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return _type_name(self) or super().display_type_rich(ctx)

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _uses_markup(command: TyperCommand | TyperGroup) -> bool:
    return bool(typer.core.HAS_RICH and command.rich_markup_mode == "rich")


def _literal(text: str | None, markup: bool) -> str | None:
    return escape(text) if markup and text else text


def _conventional(params: Sequence[Any], markup: bool) -> None:
    """Give ``params`` conventional metavars and literal help (once each)."""
    for param in params:
        if type(param) not in (TyperOption, TyperArgument):
            continue  # ours already (seen before), or not typer's
        if not METAVAR_HOOKS:  # another typer: its own metavars; the help still literal
            if getattr(param, "_ambidex_literal", False):
                continue
            param._ambidex_literal = True
        elif type(param) is TyperOption:
            # The class only changes how the parameter is shown: typer builds its
            # parameters itself and offers no hook for a class of one's own.
            param.__class__ = _Option
        else:
            param.__class__ = _Argument
        param.help = _literal(param.help, markup)


def _literal_help(command: TyperCommand | TyperGroup) -> None:
    markup = _uses_markup(command)
    command.help = _literal(command.help, markup)
    command.short_help = _literal(command.short_help, markup)
    command.epilog = _literal(command.epilog, markup)
    _conventional(command.params, markup)


class Command(TyperCommand):
    """A typer command that follows the conventions above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _literal_help(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _conventional(params, _uses_markup(self))  # the help option is made on demand
        return params

    def invoke(self, ctx: Any) -> Any:
        """Check the ``AMBIDEX_*`` variables (after the options: ``-h`` always works), then run."""
        from ambidex.cli._environment import check_environment

        try:
            check_environment()
        except ValueError as exc:
            raise fail(str(exc)) from None
        return super().invoke(ctx)


class Group(TyperGroup):
    """A typer group that follows the conventions above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _literal_help(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _conventional(params, _uses_markup(self))  # the help and completion options
        return params


class RootGroup(Group):
    """The ``ambidex`` group: every error, usage errors included, is one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run(standalone_mode: bool) -> Any:
            return super(RootGroup, self).main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run(False)
        try:
            result = run(False)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        except Exception as exc:
            if _is_click_error(exc):
                _print_click_error(exc)
                sys.exit(getattr(exc, "exit_code", 2))
            _print_unexpected(exc)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _is_click_error(exc: Exception) -> bool:
    """True for click's own exceptions (whichever click typer uses)."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def _print_click_error(exc: Exception) -> None:
    """A usage error as one line: what is wrong, and where the options are listed."""
    message = str(getattr(exc, "format_message", lambda: str(exc))())
    if type(exc).__name__ == "NoArgsIsHelpError":
        if message.strip():  # click without rich: the help is the message
            typer.echo(message)
        return
    message = message.replace(": Value error, ", ": ").strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.help_option_names:
        message += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
    print_error(" ".join(message.split()))


def _print_unexpected(exc: Exception) -> None:
    """An exception no command expected: one line, the traceback only at debug level."""
    from ambidex.cli._logging import LogLevel, chosen_level

    if chosen_level() is LogLevel.debug:
        traceback.print_exception(exc)
        hint = ""
    else:
        hint = " (--log-level debug shows the traceback)"
    text = " ".join(str(exc).split()) or "no message"
    print_error(f"unexpected {type(exc).__name__}: {text}{hint}")


class AmbidexTyper(typer.Typer):
    """A ``typer.Typer`` whose groups and commands follow the conventions above."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
        """Register a command (a :class:`Command` unless ``cls=`` says otherwise)."""
        kwargs.setdefault("cls", Command)
        return super().command(name, **kwargs)
