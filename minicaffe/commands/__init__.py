"""The command-line programs; each module has main(argv=None) -> exit status."""
