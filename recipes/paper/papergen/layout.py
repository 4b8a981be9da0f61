"""How a generated recipe is laid out: header notes, YAML sections, aligned comments."""

from __future__ import annotations

from dataclasses import dataclass, field

TITLES = {"table1": "Table 1", "table2": "Table 2", "table3": "Table 3", "table4": "Table 4"}
HEADER = "# Written by recipes/paper/generate.py: edit that, not this file."


@dataclass
class Spec:
    """What a method adds to a recipe: header notes, YAML sections, its LR and LR grid."""

    notes: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)
    lr: float | None = None
    grid: tuple[float, ...] | None = None
    preset_grid: bool = True  # the grid is the method preset's (no --lrs in the command)


def lr_text(lr: float) -> str:
    """A float YAML reads back as a float (PyYAML wants a dot: ``2.0e-3``, never ``2e-03``)."""
    mantissa, exponent = f"{lr:e}".split("e")
    mantissa = mantissa.rstrip("0")
    mantissa += "0" if mantissa.endswith(".") else ""
    return f"{mantissa}e{int(exponent)}"


def grid_text(grid: tuple[float, ...]) -> str:
    return ",".join(f"{lr:g}" for lr in grid)


def note_lines(notes: list[str]) -> list[str]:
    return [f"# {line}" for note in notes for line in wrap(note)]


def section_lines(sections: dict[str, list[str]]) -> list[str]:
    lines = []
    for section in ("lora", "adapter"):
        if section in sections:
            lines.append(f"{section}:")
            lines += [f"  {item}" for item in sections[section]]
    return lines


def finish(lines: list[str]) -> str:
    """The file's text, YAML comments aligned."""
    lines = [line if line.lstrip().startswith("#") else align(line) for line in lines]
    return "\n".join(lines) + "\n"


def align(line: str, column: int = 29) -> str:
    """``  key: value  # comment`` with the comment at ``column``."""
    text, sep, comment = line.partition(" # ")
    if not sep:
        return line
    text = text.rstrip()
    return f"{text}{' ' * max(1, column - len(text))}# {comment.strip()}"


def wrap(text: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines
