"""Inputs and Outputs tables of README.md, terraform-docs style, from variables.tf and outputs.tf.

    readme_tables.py           exit 1 if README.md's tables are out of date
    readme_tables.py --write   rewrite them (between the BEGIN_TF_DOCS/END_TF_DOCS markers)

Needs python-hcl2 (installed with checkov in the test virtualenv).
"""

import json
import os
import re
import sys

import hcl2

INFRA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"
REQUIRED = {"task_image_uri"}  # defaults to null but is validated non-null


def source_type(lines):
    """The `type = …` expression of a variable block as written, on one line."""
    out, grabbing = [], False
    for line in lines:
        if re.match(r"^  type\s*=", line):
            grabbing = True
            out.append(line.split("=", 1)[1])
        elif grabbing and re.match(r"^  [a-z_]+(\s*=| \{)|^\}", line):
            break
        elif grabbing:
            out.append(line)
    text = " ".join(part.strip() for part in out).strip()
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", text))


def tables():
    path = os.path.join(INFRA, "variables.tf")
    src = open(path).read().splitlines()
    rows = [
        "## Inputs",
        "",
        "| Name | Description | Type | Default | Required |",
        "|------|-------------|------|---------|:--------:|",
    ]
    for item in hcl2.load(open(path))["variable"]:
        ((name, block),) = item.items()
        typ = source_type(src[block["__start_line__"] - 1 : block["__end_line__"]])
        if len(typ) > 60:
            typ = "object (see above)"
        default = "n/a" if name in REQUIRED else "`" + json.dumps(block["default"][0]) + "`"
        required = "yes" if name in REQUIRED else "no"
        desc = block["description"][0].replace("|", "\\|")
        rows.append(f'| <a name="input_{name}"></a> [{name}](#input_{name}) | {desc} | `{typ}` | {default} | {required} |')
    rows += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    for item in hcl2.load(open(os.path.join(INFRA, "outputs.tf")))["output"]:
        ((name, block),) = item.items()
        rows.append(f'| <a name="output_{name}"></a> [{name}](#output_{name}) | {block["description"][0]} |')
    return "\n".join(rows)


def main():
    readme_path = os.path.join(INFRA, "README.md")
    readme = open(readme_path).read()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    wanted = f"{head}{BEGIN}\n{tables()}\n{END}{tail}"
    if "--write" in sys.argv:
        open(readme_path, "w").write(wanted)
    elif wanted != readme:
        print("README.md Inputs/Outputs tables are out of date: run infra/test/readme_tables.py --write")
        sys.exit(1)


main()
