"""Registries resolve names lazily and explain unknown names."""

import pytest

from contavsep.registry import MODELS, STRATEGIES, Registry, RegistryError


def test_did_you_mean():
    with pytest.raises(RegistryError, match="did you mean 'contavsep'"):
        STRATEGIES.check("contavsp")
    with pytest.raises(RegistryError, match="valid models: iquery, coseparation"):
        MODELS.get("unet9000")


def test_all_strategy_names_of_the_paper():
    assert set(STRATEGIES.names()) == {"finetune", "lwf", "ewc", "plop", "ewf", "avcil", "contavsep", "joint"}


def test_lazy_resolution():
    reg = Registry("thing", {"json_dumps": "json:dumps"})
    import json

    assert reg.get("json_dumps") is json.dumps
    assert "json_dumps" in reg and "x" not in reg
