"""``python -m mimii_due.cli``."""

from mimii_due.cli import main

main()
