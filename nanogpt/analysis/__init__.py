"""What runs tell when read back: runs (each run folder summarised: status, best val loss, speed,
curve) and report (the table, summary.csv/md and sweep.png of a run or a sweep)."""
