"""Command-line plumbing shared by every tool: flags generated from the configuration
dataclasses (`config`), flag groups several tools share, `--help` that lists the tool's own
flags, and one-line errors.

    cli.define_flags(config.TrainConfig)          # one flag per field, with its default and help
    config = cli.config_from_flags(config.TrainConfig)
    cli.run(main, __doc__)                          # app.run with a --help that lists our flags

Free of TensorFlow, like `config`.
"""

import dataclasses
import logging
import os
import sys
import typing

from absl import app, flags

from mobile_pirl_tf.core import output
from mobile_pirl_tf.core.errors import UsageError

FLAGS = flags.FLAGS
REPO = output.REPO
# The real image data of this project's machines (../shared/data), the default of the
# benchmarks' data flags.
SHARED_IMAGENETTE = os.path.join(REPO, "..", "shared", "data", "imagenette")

# The flags this process defined through this module, in order: name -> group title.
_DEFINED = {}


def _flag_kind(annotation):
    """The absl DEFINE_* kind of a field's type (Optional[X] -> X; tuples -> list)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        item = typing.get_args(annotation)[0]
        return "list", item
    return {int: "integer", float: "float", str: "string", bool: "bool"}[annotation], None


def define_flags(config_class, exclude=(), group=None, **default_overrides):
    """Defines one absl flag per field of `config_class` (minus `exclude`), with the field's
    default (or `default_overrides[name]`), help and choices."""
    hints = typing.get_type_hints(config_class)
    groups = {name: title for title, names in getattr(config_class, "HELP_GROUPS", {}).items()
              for name in names}
    for field in dataclasses.fields(config_class):
        if field.name in exclude or field.name in FLAGS:
            continue
        kind, _ = _flag_kind(hints[field.name])
        default = default_overrides.get(field.name, field.default)
        help_text = field.metadata.get("help", "")
        choices = field.metadata.get("choices")
        if choices:
            flags.DEFINE_enum(field.name, default, list(choices), help_text)
        elif kind == "list":
            flags.DEFINE_list(field.name, None if default is None else [str(v) for v in default],
                              help_text)
        else:
            getattr(flags, f"DEFINE_{kind}")(field.name, default, help_text)
        _DEFINED[field.name] = group or groups.get(field.name, "Flags")


def config_from_flags(config_class, **overrides):
    """The `config_class` of the parsed flags (fields without a flag keep their defaults)."""
    hints = typing.get_type_hints(config_class)
    values = {}
    for field in dataclasses.fields(config_class):
        if field.name not in FLAGS:
            continue
        value = FLAGS[field.name].value
        kind, item = _flag_kind(hints[field.name])
        if kind == "list" and value is not None:
            try:
                value = tuple(item(v) for v in value)
            except ValueError:
                raise UsageError(f"--{field.name}={','.join(value)}: every value must be "
                                 f"{'an integer' if item is int else 'a ' + item.__name__}"
                                 ) from None
        values[field.name] = value
    # A named recipe sets the fields it names, except those whose flag was given explicitly.
    recipe = getattr(config_class, "RECIPES", {}).get(values.get("recipe"), {})
    values.update({k: v for k, v in recipe.items() if k not in FLAGS or not FLAGS[k].present})
    return config_class(**{**values, **overrides})


# Flags several tools share that are not part of a configuration dataclass.
COMMON_FLAGS = {
    "seed": ("integer", 0, "Seed."),
    "image_size": ("integer", 64, "Input size in pixels."),
    "threads": ("list", ["1", "2"], "LiteRT thread counts to time."),
    "data_dir": ("string", os.path.join(SHARED_IMAGENETTE, "train"),
                 "Folder of images (any nesting)."),
    "eval_data_dir": ("string", SHARED_IMAGENETTE,
                      "Labelled folder with train/<class>/ and test/<class>/."),
    "output_dir": ("string", None, "Where results are written."),
    "backbone": ("string", "mobilenetv3small", "Backbone."),
}


def define_common(*names, group="Common flags", **defaults):
    """Defines the named `COMMON_FLAGS` (with `defaults` overriding theirs)."""
    for name in names:
        kind, default, help_text = COMMON_FLAGS[name]
        getattr(flags, f"DEFINE_{kind}")(name, defaults.get(name, default), help_text)
        _DEFINED[name] = group


def show_in_help(group, *names):
    """Lists flags defined elsewhere (absl's DEFINE_*) under `group` in the tool's --help."""
    for name in names:
        _DEFINED[name] = group


def help_text(doc):
    """The tool's docstring and its own flags, grouped, with defaults (absl's flags are left to
    --helpfull)."""
    lines = [doc.strip(), ""]
    groups = {}
    for name, group in _DEFINED.items():
        groups.setdefault(group, []).append(name)
    for group, names in groups.items():
        lines.append(f"{group}:")
        for name in names:
            flag = FLAGS[name]
            default = flag.default
            if isinstance(default, (list, tuple)):
                default = ",".join(str(v) for v in default)
            lines.append(f"  --{name}  (default: {'none' if default is None else default})")
            lines.append(f"      {flag.help}")
        lines.append("")
    lines.append("--helpfull lists every flag, TensorFlow's and absl's included.")
    return "\n".join(lines)


def run(main, doc):
    """`absl.app.run(main)`, except that -h / --help / --helpshort print `help_text(doc)` and
    exit 0, a UsageError from main is printed as one line with exit code 2, and the
    framework's own output is dropped (`framework_quiet`)."""
    if any(arg in ("-h", "--help", "--helpshort", "-?") for arg in sys.argv[1:]):
        try:
            print(help_text(doc))
        except BrokenPipeError:  # `--help | head`
            pass
        sys.exit(0)

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        if not output.verbose():
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices
            from absl import logging as absl_logging

            handler = absl_logging.get_absl_handler()
            handler.addFilter(output.own_or_serious)
            handler.setFormatter(output.ToolFormatter())
        try:
            with output.framework_quiet():
                return main(argv)
        except UsageError as e:
            fail(e)
    app.run(guarded)


def fail(message):
    """Prints `error: message` on stderr and exits with code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
