"""What a checkpoint holds, one module a section, and the file it is written to.

- :mod:`~loopkit.resume.file`: the byte format (a checksummed header, data-only tensors), atomic writes, reading
  and verifying a file before anything is loaded.
- :mod:`~loopkit.resume.model`: the ``model`` and ``optimizer`` sections.
- :mod:`~loopkit.resume.position`: the ``position`` section (epoch, batch, global step).
- :mod:`~loopkit.resume.rng`: the ``rng`` section (every generator, per rank).
- :mod:`~loopkit.resume.data`: the ``data`` section (each rank's place in its pass over the train data).
- :mod:`~loopkit.resume.param_layout`: the ``param_layout`` section (param groups by parameter name).
- :mod:`~loopkit.resume.frozen`: the ``frozen`` section (frozen parameters, norm layers held in eval).

Each section module follows one protocol: a function that builds the section's entry from live objects, one
that lists the problems keeping an entry from fitting (``*_problems``, empty when it fits; nothing is changed),
and one that restores it. The Learner composes the sections into a checkpoint state in
:mod:`loopkit.loop.learner_state`, the floor above.
"""
