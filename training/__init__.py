"""HFL training package (see DESIGN.md)."""
