"""Metrics and scoring: where recall, accuracy and the PMI metrics are computed."""
