"""Build the bmsbank distribution and its Cython extensions.

The repository keeps the layout of the design card (native/, services/ at the root); package_dir
maps them under the single ``bmsbank`` namespace so nothing generic lands in site-packages.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

PACKAGE_DIR = {
    "bmsbank": "bmsbank",
    "bmsbank.native": "native",
    "bmsbank.services": "services",
}
PACKAGES = [
    "bmsbank",
    "bmsbank.plant",
    "bmsbank.native",
    "bmsbank.services",
    "bmsbank.services.poller",
    "bmsbank.services.poller.plugins",
    "bmsbank.services.poller.simulators",
    "bmsbank.services.arbiter",
    "bmsbank.services.publisher",
    "bmsbank.web",
]
# One folder per BMS family, found like the registry finds them.
PACKAGES += sorted(
    f"bmsbank.services.poller.plugins.{init.parent.name}"
    for init in Path(__file__).parent.glob("services/poller/plugins/*/__init__.py")
)

# Bounds checking stays ON: every buffer these modules index comes from a wire.
DIRECTIVES = {"language_level": 3, "boundscheck": True, "wraparound": False, "cdivision": True}

# No fused multiply-add: the compiled limits and decode must equal the twin to the last bit.
COMPILE_ARGS = ["-O2", "-ffp-contract=off"]

EXTENSIONS = [
    Extension("bmsbank.native._frames", ["native/_frames.pyx"], extra_compile_args=COMPILE_ARGS),
    Extension(
        "bmsbank.native._messages", ["native/_messages.pyx"], extra_compile_args=COMPILE_ARGS
    ),
    Extension(
        "bmsbank.native._limits",
        ["native/_limits.pyx"],
        depends=[
            "native/_structs.pxi",
            "native/_packs.pxi",
            "native/_charge.pxi",
            "native/_currents.pxi",
        ],
        extra_compile_args=COMPILE_ARGS,
    ),
]

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={
        "bmsbank.native": ["*.pyi", "py.typed"],
        "bmsbank": ["py.typed"],
        "bmsbank.services.publisher": ["*.dbc"],
        "bmsbank.web": ["*.html", "*.js"],
    },
    # the Cython sources and the C they generate stay out of the wheel (the sdist has them)
    exclude_package_data={"bmsbank.native": ["*.c", "*.pyx", "*.pxi"]},
    ext_modules=cythonize(EXTENSIONS, compiler_directives=DIRECTIVES),
    zip_safe=False,
)
