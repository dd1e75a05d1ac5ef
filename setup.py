"""Build step for the optional C extensions (the metadata is in pyproject.toml).

``tidekv.versioning._idhash`` computes the version id of the write path in C, and
``tidekv._putrec`` the records of the embedded store's put of a new key (see their
sources). ``optional=True``: where they cannot be compiled (no C compiler or Python
headers), ``pip install`` still succeeds and tidekv uses the pure Python definitions,
which give the same bytes (tests/versioning and tests/store compare both)."""

from setuptools import Extension, setup

IDCORE = "src/tidekv/versioning/_idcore.h"  # SHA-256 and the version id, for both

setup(
    ext_modules=[
        Extension(
            "tidekv.versioning._idhash",
            ["src/tidekv/versioning/_idhash.c"],
            depends=[IDCORE],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "tidekv._putrec",
            ["src/tidekv/_putrec.c"],
            depends=[IDCORE],
            include_dirs=["src/tidekv"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
