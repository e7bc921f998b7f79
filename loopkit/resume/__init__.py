"""What a checkpoint holds, one module a section, and the file it is written to.

- :mod:`~loopkit.resume.file`: the byte format (a checksummed header, data-only tensors), atomic writes, reading
  and verifying a file before anything is loaded.
- :mod:`~loopkit.resume.model`: the ``model`` and ``optimizer`` sections.
- :mod:`~loopkit.resume.position`: the ``position`` section (epoch, batch, global step).
- :mod:`~loopkit.resume.rng`: the ``rng`` section (every generator, per rank).
- :mod:`~loopkit.resume.data`: the ``data`` section (each rank's place in its pass over the train data).
- :mod:`~loopkit.resume.param_layout`: the ``param_layout`` section (param groups by parameter name).
- :mod:`~loopkit.resume.frozen`: the ``frozen`` section (frozen parameters, norm layers held in eval).

The sections follow one protocol, named the same in every module: ``entry(...)`` builds the section's entry from
live objects, ``problems(entry, ...)`` lists what keeps an entry from fitting them (empty when it fits; nothing is
changed, so every section is checked before anything is loaded), and ``restore(entry, ...)`` puts it back (the
position and data sections are restored by the loop's data cursor, the rng section by
:func:`~loopkit.resume.rng.restore_rng_state` at the point of the loop where it was taken). The Learner composes the sections into a checkpoint state in
:mod:`loopkit.loop.learner_state`, the floor above.
"""
