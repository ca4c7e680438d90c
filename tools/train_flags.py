"""The flags of tools/train.py (and of tools/compare.py, which trains with them), generated from
`kpartial.config`: one flag per config field, under the field's flag name, default and help, in the
group of its part (`--helpshort` lists them by group, see `cli.run_with_grouped_help`). Every
rule is the config's: `config_from_flags` builds the config and the config checks it.
"""

import cli
from absl import flags

config_lib = cli.import_without_tensorflow("config")  # parsed before TensorFlow starts

# The config's parts, as the --helpshort groups name them.
GROUP_OF_PART = {
    "data": "data",
    "loss": "loss",
    "pseudo": "pseudo labels",
    "pruning": "pruning",
    "model": "model",
    "runtime": "runtime",
    "output": "output",
}
GROUPS = tuple(GROUP_OF_PART.values())
# Flags of how to run, not of what is trained: not written to flags.txt, may change on --resume.
RUN_MODE_FLAGS = ("resume", "overwrite")


def _define(part_name, part, field):
    name, default = part.flag_name(field), field.default
    help_text = field.metadata["help"]
    group = GROUP_OF_PART[part_name]
    choices = config_lib.choices_of(field)
    if name == "method":
        help_text += " " + "; ".join(f"{n} ({w})" for n, w in config_lib.METHODS.items()) + "."
    if name == "verbose":  # the config takes 0, 1 or 2; the flag also "auto"
        choices, default = ("auto", "0", "1", "2"), "auto"
        help_text += " auto = 1 on a terminal, 2 into a file or pipe."
    if name == "prune_schedule":
        flags.DEFINE_string(name, "", help_text, module_name=group)
    elif isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text, module_name=group)
    elif choices is not None:
        flags.DEFINE_enum(name, default, list(map(str, choices)), help_text, module_name=group)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text, module_name=group)
    elif isinstance(default, float):
        flags.DEFINE_float(name, default, help_text, module_name=group)
    elif isinstance(default, tuple):
        flags.DEFINE_list(name, [str(v) for v in default], help_text, module_name=group)
    else:
        flags.DEFINE_string(name, default, help_text, module_name=group)


for _part_name, _part, _field in config_lib.Config.fields():
    _define(_part_name, _part, _field)

for _flag, (_option, _default) in config_lib.RULE_OPTION_FLAGS.items():
    flags.DEFINE_float(
        _flag,
        None,
        f"Earlier name of --pseudo_rule_options={_option}=VALUE (default {_default}); kept for "
        "old flagfiles.",
        module_name=GROUP_OF_PART["pseudo"],
    )

flags.DEFINE_bool(
    "resume",
    False,
    "Continue the run in --workdir from its last checkpoint (same flags).",
    module_name=GROUP_OF_PART["output"],
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the run in --workdir (only kpartial's own artifacts are removed, after the inputs "
    "were checked) and an existing kpartial export at the export target.",
    module_name=GROUP_OF_PART["output"],
)
flags.DEFINE_string(
    "export_name",
    "",
    "If set, export a SavedModel to savedmodels/<name>/ (one folder name).",
    module_name=GROUP_OF_PART["output"],
)
flags.DEFINE_string(
    "export_dir",
    "",
    "If set, export a SavedModel to this folder.",
    module_name=GROUP_OF_PART["output"],
)
cli.validate_export_name("export_name")
flags.register_multi_flags_validator(
    ["export_name", "export_dir"],
    lambda v: not (v["export_name"] and v["export_dir"]),
    "give --export_name or --export_dir, not both",
)
flags.register_multi_flags_validator(
    ["resume", "overwrite"],
    lambda v: not (v["resume"] and v["overwrite"]),
    "give --resume or --overwrite, not both",
)

CONFIG_FLAGS = tuple(part.flag_name(field) for _, part, field in config_lib.Config.fields())


def config_from_values(values, is_tty=False, **overrides):
    """The `Config` of flag values {name: value} (as absl parsed them), with `overrides`.

    Raises:
      ValueError: one line naming the flag whose value a config rule refuses.
    """
    values = {**values, **overrides}
    if values.get("verbose") == "auto":
        values["verbose"] = 1 if is_tty else 2
    values["verbose"] = int(values["verbose"])
    for flag in config_lib.RULE_OPTION_FLAGS:
        if values.get(flag) is None:
            values.pop(flag, None)
    return config_lib.Config.from_flat(**values)
