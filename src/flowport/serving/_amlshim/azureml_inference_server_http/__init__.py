"""flowport's stand-in: see flowport.serving.aml."""
