"""Analysis: collect (MLflow → table), transfer, degenerate runs, plots, report."""
