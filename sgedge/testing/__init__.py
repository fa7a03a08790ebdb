"""Builders of tiny random models and adapters for tests, benchmarks and examples (no
downloads). Not used by sgedge's own exporters, runtime or toolkit."""
