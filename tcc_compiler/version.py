"""The tool version (layer 0: every stage may stamp it into what it writes)."""

#: tccc's version, written into both binaries' headers, the manifest and the report.
__version__ = "0.1.0"
