"""contavsep_platform: Ray Train/Tune trials, sweeps, MLflow tracking, local services and the CLI."""
