"""The management OS agent: what a netbooted machine runs to ask pxed for
its work, capture and write its disks, and report back.

It runs inside the management OS (``python3 -m pxed.agent``, settings from
the kernel command line) and on any host (``python -m pxed.agent --url ...
--disk FILE``), where tests run it against a real pxed.  It imports the
standard library, ``zstandard`` (only for zstd images) and its own modules;
nothing else of pxed, so the management OS needs no more than that."""
