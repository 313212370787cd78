"""Command-line entry points: kampx (the proxy) and kampxctl (the control tool)."""
