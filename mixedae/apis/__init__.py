"""Run set-up for the tools: a config loaded and checked, its inputs checked, hooks and
logging added, the process group started and closed (above ``models``, ``datasets`` and
``engine``, which it configures; below ``mixedae.suite``)."""
