"""samunet_compare: every adapter trained and validated on the same folds, one leaderboard."""
