"""``python -m ferdata``."""

from ferdata.cli import main

main()
