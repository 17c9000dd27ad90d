"""What a table's configurations were chosen on: the keys that make a method, and the selection in words."""

from __future__ import annotations

# Keys that are always part of the method (a row of the table), never selected among.
METHOD_KEYS = ("memory.per_class",)


SELECTION_NOTES = {
    "none": "no selection: every configuration of each method ran",
    "val": "selected on validation",
    "test": "selected on test (optimistic)",
}


def selection_text(selection: str, *, first_tasks: int = 0, confirmed_runs: int | None = None) -> str:
    """What a table's configurations were chosen on, in words: every table, the parent run's
    ``contavsep.selection`` tag and the report carry it. ``selection``: none | val | test;
    ``first_tasks``: the search saw only the first k tasks (0: the whole stream);
    ``confirmed_runs``: fresh runs per method behind a confirmed table (None: not confirmed)."""
    text = SELECTION_NOTES[selection]
    if selection != "none" and first_tasks:
        text += f" of the first {first_tasks} tasks"
    if confirmed_runs is not None:
        return f"{text}, confirmed on {confirmed_runs} fresh run(s) per method (seeds never used by the search)"
    if selection != "none" and first_tasks:
        return f"{text}; test numbers of those tasks only (not confirmed on the full stream)"
    if selection == "val":
        return f"{text}; test numbers from the search's own seeds (not confirmed on fresh seeds)"
    return text
