"""The frozen backbone, feature extraction and the on-disk feature cache."""
