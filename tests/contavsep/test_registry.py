"""Registries resolve names lazily and explain unknown names."""

import pytest

from contavsep.registry import MODELS, STRATEGIES, Registry, RegistryError


def test_did_you_mean():
    with pytest.raises(RegistryError, match="did you mean 'contavsep'"):
        STRATEGIES.check("contavsp")
    with pytest.raises(RegistryError, match="valid models: iquery, coseparation"):
        MODELS.get("unet9000")


PAPER_STRATEGIES = {"finetune", "lwf", "ewc", "plop", "ewf", "avcil", "contavsep", "joint"}  # Table 1's rows


def test_all_strategy_names_of_the_paper():
    # the paper's are registered; a strategy added later needs no edit here (one file + one registry line)
    assert PAPER_STRATEGIES <= set(STRATEGIES.names())


def test_lazy_resolution():
    reg = Registry("thing", {"json_dumps": "json:dumps"})
    import json

    assert reg.get("json_dumps") is json.dumps
    assert "json_dumps" in reg and "x" not in reg
