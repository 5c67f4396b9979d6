"""`python -m asyncinf.runtime.cli`: the same as the `asyncinf` console script."""

from asyncinf.runtime.cli import main

main()
