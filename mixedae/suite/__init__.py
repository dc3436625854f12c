"""The suite: applications over the mixedae library (demo, speed benchmarks, GPU check, results
tables and plots, figures).

The library (``mixedae.models``, ``layers``, ``engine``, ``datasets``, ``utils``, ``registry``)
never imports this package; only ``tools/`` and the suite itself do. Everything here that reads
the repository (configs, tools) resolves paths through :class:`mixedae.suite.repo.Repo`, given
an explicit repository root.
"""
