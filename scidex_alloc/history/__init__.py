"""Budget history and plans: snapshot, history, snapshots prune and plan."""
