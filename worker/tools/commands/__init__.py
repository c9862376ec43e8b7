"""The worker side's `dejavu` subcommands, one module each (worker.tools.cli lists them): its arguments, defined at
import with light modules only, and its `run`, which imports what it needs (the `dejavu ask --help` rule)."""
