"""Continual-learning strategies, one per file, resolved by name through ``contavsep.registry.STRATEGIES``."""
