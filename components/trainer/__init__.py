"""Trainer user module, in a package of its own (see `run`)."""
