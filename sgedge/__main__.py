from sgedge.cli import entry

entry()
