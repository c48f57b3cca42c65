"""Orchestration: config, cell keys, training and the runner that ties heads to suites."""
