"""pxed's benchmarks: measurements, not tests (see bench/README.md).

Run them as scripts (``python bench/run.py``, ``python bench/build.py``);
the modules here are their parts and import nothing from ``tests``."""
