"""What a user should know about a space before its sweep runs."""

from __future__ import annotations

from contavsep_platform.spaces.space import SearchSpace, rungs


def space_notes(space: SearchSpace) -> list[str]:
    """What a user should know before the sweep runs (``sweep --check`` prints these, the sweep
    logs them): the selection, the protocol, a scheduler that can never prune."""
    notes = []
    search = space.stage("search")
    if not space.selects:
        notes.append(
            f"selection: none; every configuration is a method of its own ({', '.join(('strategy', *space.method_keys))}),"
            f" so the table reports every run's test numbers"
        )
    else:
        what = {
            "val": "validation (optimistic only by the noise of the validation sets)",
            "test": "TEST: the published numbers are optimistic (select_on: test)",
        }[space.select_on]
        notes.append(f"selection: the best configuration of each method by {space.metric} ({space.mode}) on {what}")
        if space.confirms:
            notes.append(
                f"confirmation: the chosen configurations run again on {space.confirm.seeds} fresh seed(s) x"
                f" {space.repeats.class_orders} class order(s) over all {space.stream_steps} steps; the table"
                f" ranks only their {space.publish_metric}"
            )
        else:
            notes.append(
                f"no confirmation stage: the table shows the chosen configurations' {space.publish_metric} on the"
                f" search's own seeds (add confirm: {{seeds: 3}} for numbers on fresh seeds)"
            )
    if space.protocol.type == "first_tasks":
        notes.append(
            f"protocol first_tasks: the search trains the first {search.num_steps} of {space.stream_steps} tasks"
        )
    if space.scheduler.type == "asha" and not rungs(
        space.scheduler.grace_period, space.scheduler.reduction_factor, search.num_steps
    ):
        notes.append(
            f"scheduler asha has no rung before the search's last step ({search.num_steps}, grace_period"
            f" {space.scheduler.grace_period}): it never stops a trial early; use scheduler: {{type: fifo}}"
        )
    return notes
