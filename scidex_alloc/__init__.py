"""scidex-alloc: capital committed to SciDEX artifacts becomes research budgets.

`from scidex_alloc import Allocator` is the library (see allocator.py). It is imported on
first use, not with the package: the CLI imports the package on every call, and the
allocator brings the database layer with it.
"""

__version__ = "0.1.0"
__all__ = ["Allocator", "__version__"]


def __getattr__(name: str):
    if name == "Allocator":
        from scidex_alloc.allocator import Allocator

        return Allocator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
