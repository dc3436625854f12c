"""Run set-up for the tools (tools/train.py, tools/test.py, tools/print_config.py) and the
suite, one concept per module:

- ``args``: the command-line flags the training and test tools share;
- ``config``: a config read, overridden and checked (:func:`config.load_config`);
- ``inputs``: the data, annotations, checkpoints and work dir a run reads and writes, checked
  before the model is built;
- ``hooks``: what a run adds to its config (strict loading, preemption, logging backends);
- ``test_outputs``: tools/test.py's test-time augmentation, raw and drawn predictions;
- ``distributed``: the process group, Slurm's task variables included.

This floor stands above ``models``, ``datasets`` and ``engine``, which it configures, and
below ``mixedae.suite`` (tests/unit/test_architecture.py checks the import graph).
"""
