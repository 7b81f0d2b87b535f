# Two commands set up and run everything on a fresh machine:
#   make demo   - replay a real feeder's day (IEEE European LV, fetched once) with the balancer in the loop
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
