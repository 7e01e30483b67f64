"""Figures and the report (HTML and Markdown)."""
