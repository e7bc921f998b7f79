"""The loop: the Learner, its events and cancels, callbacks and their derived order, the write guard, the
step, RNG capture and checkpoint files. Public names are re-exported from :mod:`loopkit`."""
