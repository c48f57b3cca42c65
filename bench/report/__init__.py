"""Result files, provenance, leaderboards and the regression check."""
