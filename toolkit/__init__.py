"""Import name `sgedge.toolkit`: train safety adapters (`train`, needs torch + peft) and
evaluate exported bundles through the runtime (`evaluate`, no torch)."""
