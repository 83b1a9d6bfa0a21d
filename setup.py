"""Builds the optional compiled decoder (weightstore/codec/_fastdecode.c); everything else is
in pyproject.toml. Without a C compiler the build of the extension fails quietly
(``optional=True``) and weightstore decodes with its numpy fallback instead."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "weightstore.codec._fastdecode",
            ["weightstore/codec/_fastdecode.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,
        )
    ]
)
