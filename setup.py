"""Build of the optional C extension; everything else is in pyproject.toml.

``siprec_node.media._rtprecv`` (Linux: epoll, recvmmsg) is the media workers' batched receive
path and in-order G.711 fast path. It is optional: where it does not build (no compiler, not
Linux) the workers receive through the event loop in Python, correct but ~3x the CPU per packet
(bench/media/RESULTS.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "siprec_node.media._rtprecv",
            ["src/siprec_node/media/_rtprecv.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
