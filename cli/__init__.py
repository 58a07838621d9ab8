"""The `sepwatch` command: one module per command group (cli/main.py holds the app)."""
