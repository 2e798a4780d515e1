"""The agent work queue: next, done, release and claims."""
