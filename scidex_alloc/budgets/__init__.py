"""Budgets: rank, budget, rates and convert -- the budget query and its result types."""
