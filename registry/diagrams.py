"""Workflow definitions drawn as Mermaid state diagrams."""

import re

from .workflow_definitions import END, FAIL, HUMAN, next_states

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_]")
_SAFE_LABEL = re.compile(r"[A-Za-z0-9 _.\-]")
HIGHLIGHT_CLASS = "visited"


def mermaid_state_diagram(definition: dict, highlight: list[str] | None = None) -> str:
    """`stateDiagram-v2` source for a normalised definition; states named in `highlight` are marked.

    Error transitions are labelled "error" and rejections "reject" (Mermaid's state diagrams
    cannot dash a transition). `end` is the final state, `human` and `fail` are states of their own.
    """
    steps = definition["steps"]
    edges = [("[*]", _state_id(steps[0]["name"]), "")]
    for index, step in enumerate(steps):
        source = _state_id(step["name"])
        edges += [(source, _target(target), "") for target in next_states(definition, index)]
        edges += [
            (source, _target(step[key]), label)
            for key, label in (("on_error", "error"), ("on_reject", "reject"))
            if key in step
        ]
    targets = {target for _, target, _ in edges}
    names = [step["name"] for step in steps] + [name for name in (HUMAN, FAIL) if _state_id(name) in targets]
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{_label(name)}" as {_state_id(name)}' for name in names]
    lines += [
        f"    {source} --> {target}" + (f" : {_label(label)}" if label else "")
        for source, target, label in edges
    ]
    marked = [_state_id(name) for name in names if name in set(highlight or ())]
    if marked:
        lines.append(f"    classDef {HIGHLIGHT_CLASS} fill:#e2f4ea,stroke:#1f7a4d,stroke-width:2px")
        lines.append(f"    class {','.join(marked)} {HIGHLIGHT_CLASS}")
    return "\n".join(lines)


def _target(name: str) -> str:
    return "[*]" if name == END else _state_id(name)


def _state_id(name: str) -> str:
    """A prefix keeps step names clear of Mermaid keywords such as `state`, `note` or `class`."""
    return "s_" + _UNSAFE_ID.sub("_", name)


def _label(text: str) -> str:
    """Mermaid entity codes for anything beyond plain words, so no label can break the syntax."""
    return "".join(char if _SAFE_LABEL.fullmatch(char) else f"#{ord(char)};" for char in text)
