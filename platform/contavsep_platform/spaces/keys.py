"""The names a space gives to keys of a trial's config and of its Tune config."""

from __future__ import annotations

STRATEGY_KEY = "strategy.name"
STORAGE_PLACEHOLDER = "{storage}"
# Bookkeeping keys of a trial's Tune config (not config keys): its configuration group (a
# content hash of the configuration, see contavsep_platform.search) and its repeat ("s0-o1").
GROUP_KEY = "group"
REPEAT_KEY = "repeat"
# A confirmation trial's Tune config: {"trial": its parameters} (one value of the stage's grid).
CONFIRM_TRIAL_KEY = "trial"
# The config keys a repeat sets (a seed; a class order when there are several).
REPEAT_CONFIG_KEYS = ("train.seed", "data.seed", "data.shuffle_classes")
