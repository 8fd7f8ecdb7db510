"""Everything declarative lives in setup.cfg; this file adds the optional C
extension (the compiled kernels), which setup.cfg cannot describe."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the build warns, skips it, and the
        # package runs on its numpy kernels
        Extension(
            "hotpixel_shm._ckernels",
            sources=["hotpixel_shm/_ckernels.c"],
            optional=True,
            # no fused multiply-add: the compiled kernels round exactly as
            # the numpy ones do; no floating-point traps assumed (the same
            # results: it only lets the compiler turn the medians' and the
            # clipping test's comparisons into vector selects); no errno from
            # the math functions, which nothing reads (square roots vectorise)
            extra_compile_args=["-std=c99", "-O3", "-ffp-contract=off", "-fno-trapping-math",
                                "-fno-math-errno"],
        ),
    ],
)
