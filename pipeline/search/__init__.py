"""Search: a seeded multi-objective Optuna study over a config's compression knobs (`edgepipe search`)."""
