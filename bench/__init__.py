"""simbench machinery: configuration, training, scoring, metrics, result files, leaderboards."""
__version__ = "0.1.0"
SCHEMA_VERSION = 2  # 2: cell keys (config, code, data, libraries, device type), resolved head options
