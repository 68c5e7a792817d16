"""HFL annotation_ui package (see DESIGN.md)."""
