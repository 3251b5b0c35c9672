"""A simulated trading system and the Knight-style runaway scenario (demo and examples)."""
