"""Scheduling: hyperparameters, pure schedules of training time, the Scheduler callback that applies them,
and the scheduled batch size. Public names are re-exported from :mod:`loopkit`."""
