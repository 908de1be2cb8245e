"""Command-line tools with upstream's names, arguments and options."""
