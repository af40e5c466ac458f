"""Command-line tools: sweeps over runs, results and leaderboards, dataset checks."""
