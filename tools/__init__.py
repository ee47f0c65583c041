"""Scripts that keep the documentation true to the program."""
