"""Loading data: load (CSV or JSON Lines files) and generate (synthetic data)."""
