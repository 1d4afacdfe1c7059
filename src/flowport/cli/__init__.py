"""The flowport command line."""
