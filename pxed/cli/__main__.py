"""``python -m pxed.cli``: pxectl without the console script."""

from pxed.cli import main

main(prog_name="pxectl")
