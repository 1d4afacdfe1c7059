"""flowport's test tool package."""
