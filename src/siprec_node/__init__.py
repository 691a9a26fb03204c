"""siprec-node: a SIPREC Session Recording Server with shared session persistence."""

__version__ = "0.1.0"
