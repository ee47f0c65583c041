"""Transform user module, in a package of its own (see its docstring)."""
