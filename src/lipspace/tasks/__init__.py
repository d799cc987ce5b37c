"""Task functions (train, evaluate, render, demo) called by the thin CLI entry points and by tests."""
