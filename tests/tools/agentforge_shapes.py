"""Describe AgentForge's Pydantic models per data file, so tests can check shapes without its code.

Run it with the Python of a virtualenv that has AgentForge's requirements installed (not ours):

    /tmp/af-venv/bin/python tests/tools/agentforge_shapes.py \
        57dc2c9=/tmp/agentforge-first effb5d0=/tmp/agentforge-last > tests/fixtures/agentforge/shapes.json

Each checkout is read in a child process (both define the same module names). For every data file
the description names the model and, per field: its type (``string``, ``integer``, ``number``,
``boolean``, ``array`` with ``items``, ``object`` with ``values``, ``any``, an ``enum`` with its
values, or a nested ``model``), whether the field is ``required`` (no default: a record without it
is rejected) and whether it is ``nullable`` (``Optional[...]`` or a ``None`` default: ``null`` loads).
Nested models are described once under ``models``.
"""

import enum
import json
import os
import subprocess
import sys
import typing

from agentforge_env import FILES, point_agentforge_at


def describe(annotation, models):
    """A JSON description of one type annotation; nested models are added to ``models``."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        options = [a for a in args if a is not type(None)]
        shape = describe(options[0], models) if len(options) == 1 else {"type": "any"}
        return dict(shape, nullable=True) if type(None) in args else shape
    if origin in (list, set, tuple, typing.List):
        return {"type": "array", "items": describe(args[0], models) if args else {"type": "any"}}
    if origin in (dict, typing.Dict):
        return {"type": "object", "values": describe(args[1], models) if len(args) == 2 else {"type": "any"}}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"type": "enum", "enum": [member.value for member in annotation]}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.__name__ not in models:
            models[annotation.__name__] = None  # placeholder against recursion
            models[annotation.__name__] = describe_model(annotation, models)
        return {"type": "model", "model": annotation.__name__}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    return {"type": simple.get(annotation, "any")}


def describe_model(model, models):
    fields = {}
    for name, info in model.model_fields.items():
        shape = describe(info.annotation, models)
        shape["required"] = info.is_required()
        shape["nullable"] = bool(shape.get("nullable")) or (
            not info.is_required() and info.default is None and info.default_factory is None
        )
        fields[name] = shape
    return {"fields": fields}


def one_checkout(checkout):
    point_agentforge_at(checkout, os.path.join(os.getcwd(), "data"))
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        modules = {name: importlib.import_module(name) for name in ("core.security", "api.main")}
    models, files = {}, {}
    for path, (module, name) in FILES.items():
        files[path] = describe(getattr(modules[module], name), models)["model"]
    return {"files": files, "models": dict(sorted(models.items()))}


def main(argv):
    if len(argv) == 2 and argv[0] == "--one":
        json.dump(one_checkout(os.path.abspath(argv[1])), sys.stdout)
        return 0
    if not argv or any("=" not in a for a in argv):
        sys.exit("usage: agentforge_shapes.py LABEL=CHECKOUT [LABEL=CHECKOUT ...] > shapes.json")
    import tempfile

    eras = {}
    for pair in argv:
        label, checkout = pair.split("=", 1)
        with tempfile.TemporaryDirectory() as scratch:  # the app writes its defaults on import
            answer = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one", os.path.abspath(checkout)],
                cwd=scratch,
                capture_output=True,
                text=True,
                check=True,
            )
        eras[label] = json.loads(answer.stdout)
    sys.stdout.write(render({"generated_by": "tests/tools/agentforge_shapes.py", "eras": eras}))
    return 0


def render(document):
    """JSON with one field per line, so a diff between two generations reads field by field."""
    lines = ["{", f'  "generated_by": {json.dumps(document["generated_by"])},', '  "eras": {']
    for e, (label, era) in enumerate(document["eras"].items()):
        lines.append(f"    {json.dumps(label)}: {{")
        lines.append(f'      "files": {json.dumps(era["files"], sort_keys=True)},')
        lines.append('      "models": {')
        for m, (name, model) in enumerate(era["models"].items()):
            lines.append(f'        {json.dumps(name)}: {{"fields": {{')
            fields = list(model["fields"].items())
            for f, (field, shape) in enumerate(fields):
                comma = "," if f < len(fields) - 1 else ""
                lines.append(f"          {json.dumps(field)}: {json.dumps(shape, sort_keys=True)}{comma}")
            lines.append("        }}" + ("," if m < len(era["models"]) - 1 else ""))
        lines.append("      }")
        lines.append("    }" + ("," if e < len(document["eras"]) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
