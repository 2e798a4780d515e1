"""Holds: budget reserved before work whose cost is known only afterwards, then settled."""
