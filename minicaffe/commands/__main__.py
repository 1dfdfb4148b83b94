"""python -m minicaffe.commands NAME [options]: see minicaffe.commands."""
import sys

from minicaffe.commands import main

sys.exit(main())
