"""The one configuration signature (contavsep/signature.py)."""

from __future__ import annotations

import pytest

from contavsep.first_step import key_of
from contavsep.signature import signature


def test_the_signature_of_a_configuration_does_not_depend_on_key_order():
    a = {"strategy.name": "lwf", "train.seed": 0, "strategy.lambda_dist": 0.3}
    b = dict(reversed(list(a.items())))
    assert signature(a) == signature(b) and len(signature(a)) == 8
    assert signature(a) != signature({**a, "strategy.lambda_dist": 0.31})
    assert signature(a, 24).startswith(signature(a))


def test_a_sweep_started_before_the_signature_module_resumes_with_the_same_configuration_ids():
    # The search's configuration ids were sha1(json.dumps(sort_keys=True, default=str))[:8]; a
    # resumed sweep's searcher holds them, and a proposal must match its earlier group.
    assert signature({"strategy.name": "lwf", "train.seed": 0, "strategy.lambda_dist": 0.3}) == "b7cfa591"


def test_step_zero_keys_are_signatures_of_their_fields():
    fields = {"strategy": "plain", "data_content_hash": "abc", "world_size": 1}
    assert key_of(fields) == signature(fields, 24)
    with pytest.raises(ValueError, match="1..40"):
        signature(fields, 41)
