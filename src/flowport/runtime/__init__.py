"""Runtimes: what turns a deployment plan into running instances (see ``base``)."""
