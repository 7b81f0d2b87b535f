"""Simulated devices for tests and demos, speaking real protocols (pymodbus, pseudo-terminals)."""
