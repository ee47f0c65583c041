"""Reading a finished run: its summary, ML Metadata, the report and notebook."""
