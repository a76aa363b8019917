"""Command-line interface (``deepens ...``); nothing in the library imports it."""
