"""contavsep: continual audio-visual sound separation (the science library; never imports ray or mlflow)."""
