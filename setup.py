"""Maps the repository's top-level folders into the one import package `asyncinf`.

pyproject.toml holds all metadata; this file exists only because setuptools' declarative
`packages.find` cannot add the `asyncinf.` prefix to the packages it finds.
"""

from setuptools import find_packages, setup

ROOTS = ("runtime", "transports", "robots", "policies")

setup(
    package_dir={f"asyncinf.{root}": root for root in ROOTS},
    packages=[
        f"asyncinf.{name}"
        for root in ROOTS
        for name in (root, *(f"{root}.{sub}" for sub in find_packages(root)))
    ],
)
