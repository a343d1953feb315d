"""stilts: reproducible intermediate-task transfer learning studies."""

__version__ = "0.1.0"
