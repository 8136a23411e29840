"""The workbook's performance benchmark (`make bench` = `python -m benchmarks.run`).

budgets   the budgets and the table comparing measurements with them (pure functions)
measure   papermill wall time, kernel peak memory, fresh-kernel-to-setup time
overhead  helpers.training.train against a bare model.fit
run       the command line: measures, prints the table, writes build/bench.md and build/bench.json
"""
