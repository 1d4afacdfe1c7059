"""flowport's stand-in (``flowport.serving.aml``); on sys.path only when the real package is not installed."""
