# Two commands set up and run everything on a fresh machine:
#   make demo   - a whole simulated site (nodes, transformer Pi, broker, server) through a feeder's day in ~2 minutes
#   make test   - the whole test suite, CPython and the MicroPython unix port
.PHONY: demo test bench setup
setup:
	@scripts/bootstrap

demo: setup
	.venv/bin/phasekit demo

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/phasekit bench core
