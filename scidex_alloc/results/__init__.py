"""Result objects the service returns and the renderer formats, one module per area.

Building a dataclass costs ~0.3 ms at import, paid on every shell call, so a command
imports only its area's module: `budgets`, `spending`, `loading`, `queue`, `history`.
"""
