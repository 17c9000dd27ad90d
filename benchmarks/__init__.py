"""Benchmarks of the library and the platform, run from the repository root as
``python -m benchmarks.<module>`` (see docs/development.md). Not part of the installed packages."""
