"""scidex-alloc: capital committed to SciDEX artifacts becomes research budgets."""

__version__ = "0.1.0"
