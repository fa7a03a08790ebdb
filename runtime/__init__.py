"""sgedge.runtime: run exported bases with safety adapters. Never imports torch."""
