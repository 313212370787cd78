"""UDP listen sockets shared by the workers, and the worker-to-worker hand-off channel."""
