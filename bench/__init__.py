"""simbench machinery: configuration, training, scoring, metrics, result files, leaderboards."""

__version__ = "0.1.0"
