"""Sweeps: a failed job becomes a row instead of stopping the sweep, an interrupted sweep resumes, and every sweep
ends with a summary table.

- `jobs.py`: what runs inside each job (`run_job`: the failure record and `resume=true`; a multirun job under DDP);
- `callback.py`: `SweepSummary`, the Hydra callback (conf/hydra/default.yaml): per-job records, the resume guard,
  the summary at the end;
- `summary.py`: the summary tables themselves.

Each job's directory gets `job.json` (overrides, status, and how a resumed sweep treated it), written by
`SweepSummary` in the process that runs the job, so any launcher works (basic, joblib, submitit), beside the run's
`metrics.json`, or `error.txt` when it failed. `on_multirun_end` collects them into `summary.csv` and `summary.md`.

Re-running a sweep into its own directory with `resume=true` (`python train.py -m model=a,b seed=0,1
hydra.sweep.dir=DIR resume=true`) skips the jobs that finished (their `metrics.json` is returned as the job's
result), resumes the ones that were cut off from their newest checkpoint and starts the others. Job `N` lives in
`DIR/N`, and Hydra's basic sweeper numbers the grid the same way on every run of the same command. As a guard, a
directory whose recorded overrides are not those of the job that would reuse it stops the sweep (with the basic
sweeper before any job runs, with others when that job starts). Without `resume=true`, a job whose directory holds
a finished run trains again and replaces its results (with a warning).
"""
