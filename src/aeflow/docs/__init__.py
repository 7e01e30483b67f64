"""The documentation's generated parts: result records and their tables, the configuration reference."""
