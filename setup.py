"""Build step for the one optional C extension (the metadata is in pyproject.toml).

``tidekv.versioning._idhash`` computes the version id of the write path in C (see its
source). ``optional=True``: where it cannot be compiled (no C compiler or Python
headers), ``pip install`` still succeeds and tidekv uses the pure Python definition,
which gives the same ids (tests/versioning compare both)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tidekv.versioning._idhash",
            ["src/tidekv/versioning/_idhash.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
