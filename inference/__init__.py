"""HFL inference package (see DESIGN.md)."""
