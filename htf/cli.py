"""What every command line of the project shares: help layout, config options, exits.

One implementation for all commands: the program's real name in the usage line, option
defaults in the help, an ``examples:`` epilog, a ``configuration`` group with ``--config``
(preset name or file), ``--set``, ``--print-config`` and ``--list-keys``, and one
``error:`` line (exit 2) for a bad config.
"""
from __future__ import annotations

import argparse
import functools
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from htf.config import ConfigError, Override, config_keys, dump_config, format_keys, load_config, presets

# Options that print something and exit: they work without the command's required options.
INFO_FLAGS = ("--print-config", "--list-keys")


class CommandExit(Exception):
    """Leave a command with this exit status (caught by :func:`command`)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a ``main(argv) -> int``: a :class:`CommandExit` becomes its return value; a
    Ctrl-C the command does not handle itself (e.g. while it reads its config) one line."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except CommandExit as done:
            return done.code
        except KeyboardInterrupt:
            return fail("interrupted", 130).code
    return wrapper


def fail(message: Any, code: int = 2) -> CommandExit:
    """Print one ``error:`` line; ``raise fail(...)`` leaves the command."""
    print(f"error: {message}", file=sys.stderr)
    return CommandExit(code)


# What a command that writes a report folder says on an OS error and on Ctrl-C.
WRITABLE = "; choose a writable --output"
RERUN = "the outputs are not complete; run the same command again"


@contextmanager
def reported_errors(expected: tuple[type[BaseException], ...], *, on_interrupt: str | Callable[[], str],
                    os_hint: str = "", code: int = 2) -> Iterator[None]:
    """The ``expected`` errors, OS errors (an unwritable output, a full disk) and Ctrl-C
    leave the command as one ``error:`` line each; ``on_interrupt`` says how to go on."""
    try:
        yield
    except expected as err:
        raise fail(err, code) from None
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        raise fail(f"{where}{err.strerror or err}{os_hint}", code) from None
    except KeyboardInterrupt:
        hint = on_interrupt() if callable(on_interrupt) else on_interrupt
        raise fail(f"interrupted; {hint}", 130) from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and examples kept as written; an option's default appended to its help
    when it has a meaningful one (not None/False/empty, which read as "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is argparse.SUPPRESS
                or default is None or default is False or default == [] or "default" in text):
            return text
        return f"{text} (default: %(default)s)"


def prog_name(module: str) -> str:
    """The name the user typed: a console script (``htf-train``) or ``python -m train``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("htf-") else f"python -m {module}"


def make_parser(module: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A parser with the real program name, defaults shown and ``examples`` as the epilog
    (``%(prog)s`` in the examples becomes the program name)."""
    return argparse.ArgumentParser(prog=prog_name(module), description=wrap(description),
                                   epilog="examples:\n" + examples.strip("\n"), formatter_class=HelpFormatter)


def wrap(text: str, width: int = 79) -> str:
    """Paragraphs (blank-line separated) filled to ``width``; help texts are kept raw otherwise."""
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width) for par in text.strip().split("\n\n"))


def add_config_options(parser: argparse.ArgumentParser, part: str | None, set_example: str,
                       set_help: str | None = None, print_help: str | None = None) -> argparse._ArgumentGroup:
    """The ``configuration`` group: --config (when the part has presets), --set, --print-config,
    --list-keys."""
    group = parser.add_argument_group("configuration")
    if part is not None:
        group.add_argument("--config", metavar="PRESET",
                           help=f"preset name ({', '.join(presets(part))}: configs/{part}/NAME.yaml) "
                                "or a YAML file; keys it leaves out keep their defaults "
                                "(default: the built-in defaults)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=set_help or f"override one config key, YAML value (repeatable), e.g. --set {set_example}")
    group.add_argument("--print-config", action="store_true",
                       help=print_help or "print the resolved config (preset + flags + --set) as YAML and exit")
    group.add_argument("--list-keys", action="store_true",
                       help="list every config key with its type and default, and exit")
    return group


def key_default(cls: type, key: str) -> Any:
    """The dataclass default of a dotted config key."""
    for name, _, default in config_keys(cls):
        if name == key:
            return default
    raise KeyError(key)


def add_config_flag(group: argparse._ArgumentGroup, flag: str, key: str, cls: type, text: str,
                    **kwargs: Any) -> argparse.Action:
    """A shortcut option for one config key; its help names the key and the key's default."""
    default = key_default(cls, key)
    shown = "" if default in (None, "") else f"; default {default}"
    return group.add_argument(flag, help=f"{text} (config {key}{shown})", **kwargs)


def _relax_required(parser: argparse.ArgumentParser) -> None:
    for group in parser._mutually_exclusive_groups:
        group.required = False
    for action in parser._actions:
        action.required = False
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relax_required(sub)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``; with --print-config or --list-keys the required options may be left out."""
    args = sys.argv[1:] if argv is None else argv
    if any(flag in args for flag in INFO_FLAGS):
        _relax_required(parser)
    return parser.parse_args(args)


def resolve_config(args: argparse.Namespace, cls: type, part: str | None,
                   flags: Iterable[Override] = (), base: dict[str, Any] | None = None) -> Any:
    """The command's config: preset + flag overrides + --set (in that order).

    --list-keys and --print-config print and leave with status 0; a bad config prints one
    ``error:`` line and leaves with status 2 (raises :class:`CommandExit`)."""
    if getattr(args, "list_keys", False):
        sys.stdout.write(format_keys(cls))
        raise CommandExit(0)
    try:
        cfg = load_config(cls, getattr(args, "config", None), [*flags, *args.overrides], base=base, part=part)
    except ConfigError as err:
        raise fail(err) from None
    if getattr(args, "print_config", False):
        sys.stdout.write(dump_config(cfg))
        raise CommandExit(0)
    return cfg


def flag_overrides(args: argparse.Namespace, mapping: dict[str, tuple[str, str]]) -> list[Override]:
    """Overrides from shortcut options: ``mapping`` is dest -> (config key, flag); unset ones skipped."""
    out: list[Override] = []
    for dest, (key, flag) in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append((f"{key}={value}", f"{flag} {value}"))
    return out
