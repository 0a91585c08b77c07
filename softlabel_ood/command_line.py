"""What the commands share on the command line: `--help` with the config fields, and flag errors
(a misspelt field, a missing config file, a value of the wrong type) as one line with exit code 2.

absl parses the flags before a command's `main` runs, and a config file is loaded while parsing,
so these errors happen outside `main`; `parse_flags` is given to `app.run` as its parser.
"""

from __future__ import annotations

import difflib
import os
import runpy
import sys
from collections.abc import Callable, Iterable

from absl import flags

from softlabel_ood import cli_errors, configs

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(cli_errors.USAGE_EXIT_CODE)


# ---------------------------------------------------------------------------------------------
# Help.


def _config_file_arg(argv: Iterable[str]) -> tuple[str, str | None] | None:
    """(path, argument) of `--config=path[:argument]` in argv, if any."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if value is not None:
            path, _, config_arg = value.partition(":")
            return path, config_arg or None
    return None


# What --help shows without a config: the fields' values in `config_base.base_config`.
BASE_DEFAULTS = ("the base protocol's defaults (`config_base.base_config`: CIFAR-10, "
                 "WideResNet-40-2, the OE reference's training), which every family's file "
                 "starts from and changes")


def config_source(argv: Iterable[str]) -> str:
    """Which config's values `config_from_file(argv)` holds, in words, for --help."""
    found = _config_file_arg(argv)
    if found is None:
        return (f"{BASE_DEFAULTS}; no --config was given (--config=configs/<family>.py"
                f"[:<method>] shows a family's)")
    path, config_arg = found
    if not os.path.isfile(path):
        return f"{BASE_DEFAULTS}; --config={path} is no file"
    return f"those of --config={path}" + (f":{config_arg}" if config_arg else "")


def config_from_file(argv: Iterable[str]):
    """The config of `--config=...` in argv, or the base protocol's when none is given."""
    from softlabel_ood.configs import config_base
    found = _config_file_arg(argv)
    if found is None or not os.path.isfile(found[0]):
        return config_base.base_config(None)
    return runpy.run_path(found[0])["get_config"](found[1])


def field_lines(config, names: Iterable[str] | None = None) -> list[str]:
    """`--config.<field>=<value>  <what is allowed>` for every field (or those in `names`)."""
    from softlabel_ood.configs import config_validation
    values = config_validation.flat_fields(config)
    lines = []
    for name, rule in config_validation.fields().items():
        if names is not None and name.split(".")[0] not in names:
            continue
        value = values.get(name)
        if name == "dataset_paths":
            value = {k: v for k, v in value.items() if v} if value else {}
            lines.append(f"  --config.dataset_paths.<name>=<path>  (set: {value or 'none'}); "
                         f"{rule.allowed}")
            continue
        if name == "ood_groups":
            value = {k: tuple(v) for k, v in value.items()} if value else {}
            lines.append(f"  --config.ood_groups.<group>=<names>  (set: {value or 'none'}); "
                         f"{rule.allowed}")
            continue
        lines.append(f"  --config.{name}={value!r}  {rule.allowed}")
    return lines


def exit_on_help(argv: list[str], usage: str, flag_names: Iterable[str],
                 config_lines: Callable[[], list[str]], source: str) -> None:
    """Prints the usage, the command's flags and its config fields, and exits 0, when asked.

    `source` says in words which config's values the field lines show."""
    if not any(arg in HELP_FLAGS for arg in argv[1:]):
        return
    print(usage.strip())
    print("\nflags:")
    for name in flag_names:
        flag = flags.FLAGS[name]
        default = "" if flag.default in (None, False) else f" (default: {flag.default!r})"
        print(f"  --{name}: {flag.help}{default}")
    print("\nconfig fields, as --config.<field>=<value> (current value, then what is allowed).")
    print(f"Values shown: {source}.")
    for line in config_lines():
        print(line)
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# Flag errors.

def _root_user_error(error: BaseException) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if cli_errors.one_line(error) is not None:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def refuse_positional_arguments(argv: list[str]) -> None:
    """A command's `main` takes flags only: a word after them is a mistake, said in one line."""
    if len(argv) > 1:
        raise cli_errors.UserError(f"unexpected argument {argv[1]!r}: every input is a --flag "
                                   f"(--help lists them)")


def define_config_dict(config, argv: list[str],
                       flag_values: flags.FlagValues | None = None) -> None:
    """`config_flags.DEFINE_config_dict("config", config)` (a run's stored config, as predict
    takes it), with a misspelt `--config.<field>` refused in one line as `parse_flags` does.

    The overrides of a config dict are read from the command line (`argv`) when the flag is
    defined, before `parse_flags` runs."""
    from ml_collections import config_flags
    try:
        config_flags.DEFINE_config_dict("config", config, flag_values=flag_values or flags.FLAGS,
                                        sys_argv=argv)
    except Exception as e:  # any override that does not apply is the user's to fix
        message = _unknown_override(argv, config)
        if message is None:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            message = lines[-1] if lines else type(e).__name__
            message = _mistyped_override(message, argv, config) or message
        _fail(message)


_TYPE_WORDS = ((bool, "true or false"), (int, "an integer"), (float, "a number"))


def _mistyped_override(message: str, argv: list[str], config=None) -> str | None:
    """`--config.<field>: expected an integer, got 'two'` for config_flags' message about an
    override that does not parse as its field's type (`--config.<field>=two: invalid literal
    for int() ...`), which names neither the field alone nor the type."""
    arg = next((a for a in argv if a.startswith("--config.") and "=" in a
                and message.startswith(f"{a}: ")), None)
    if arg is None:
        return None
    dotted, value = arg[len("--config."):].split("=", 1)
    try:
        node = config_from_file(argv) if config is None else config
        for part in dotted.split("."):
            node = node[part]
    except Exception:  # the field or the config file is reported as config_flags words it
        return None
    word = next((word for kind, word in _TYPE_WORDS if isinstance(node, kind)), None)
    return None if word is None else f"--config.{dotted}: expected {word}, got {value!r}"


def _unknown_override(argv: list[str], config=None) -> str | None:
    """The first `--config.<field>=...` of argv that names no field of `config` (default: the
    config file of argv)."""
    if config is None:
        try:
            config = config_from_file(argv)
        except Exception:  # the config file itself fails: reported by the caller
            return None
    for arg in argv:
        if not arg.startswith("--config.") or "=" not in arg:
            continue
        dotted = arg[len("--config."):].split("=", 1)[0]
        node = config
        for part in dotted.split("."):
            if not hasattr(node, "keys") or part not in node:
                choices = list(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(part, choices, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                return f"--config.{dotted}: not a config field{hint} (--help lists the fields)"
            node = node[part]
    return None


def parse_flags(argv: list[str], flag_values: flags.FlagValues | None = None) -> list[str]:
    """absl's flag parsing, with every failure reported as one line and exit code 2."""
    flag_values = flag_values or flags.FLAGS
    try:
        rest = flag_values(argv)
        if "config" in flag_values:
            # A config file that failed to load is reported only when the config is first read.
            flag_values["config"].value.get("method")
        return rest
    except Exception as e:  # any failure to parse the command line is the user's to fix
        found = _config_file_arg(argv)
        if found is not None and not os.path.isfile(found[0]):
            _fail(f"--config: {found[0]}: no such config file; the families are "
                  f"configs/<family>.py[:<method>] with <family> one of "
                  f"{', '.join(configs.FAMILIES)}")
        if found is not None:
            try:  # the config file's own error (config_flags keeps only its text)
                config_from_file(argv)
            except cli_errors.UserError as config_error:
                _fail(cli_errors.one_line(config_error))
            except Exception:  # reported below, as config_flags words it
                pass
        user_error = _root_user_error(e)
        if user_error is not None:
            _fail(cli_errors.one_line(user_error))
        message = _unknown_override(argv)
        if message is None:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            message = lines[-1] if lines else type(e).__name__
            message = message.removeprefix("flag ")
            message = _mistyped_override(message, argv) or message
        _fail(message)
    raise AssertionError("unreachable")
